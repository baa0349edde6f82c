"""One environment: pyproject.toml's ranges, requirements.lock's exact versions (scripts/setup.sh installs
them) and envs/kebr.yaml (`snakemake --use-conda`) must agree. After editing pyproject.toml, rerun
`python scripts/lock.py`."""

import re
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^([A-Za-z0-9._-]+)==([^\s;]+)$")


def lock_pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            match = PIN.match(line)
            assert match, f"requirements.lock: {line!r} is not name==version"
            pins[canonicalize_name(match.group(1))] = match.group(2)
    return pins


def test_lock_pins_every_dependency_within_its_range():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = lock_pins()
    for text in project["dependencies"] + project["optional-dependencies"]["dev"]:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{text} (pyproject.toml) is not in requirements.lock: run `python scripts/lock.py`"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"requirements.lock pins {name}=={pins[name]}, outside pyproject.toml's {text}: run `python scripts/lock.py`")


def test_conda_env_installs_exactly_the_lock():
    env = yaml.safe_load((REPO / "envs" / "kebr.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    lines = (REPO / "requirements.lock").read_text().splitlines()
    lock = [line for line in lines if line and not line.startswith("#")]
    assert pip == lock, "envs/kebr.yaml and requirements.lock differ: run `python scripts/lock.py`"
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python="))
    assert f"# python {python.removeprefix('python=')}," in (REPO / "requirements.lock").read_text()


def test_setup_installs_the_lock():
    setup = (REPO / "scripts" / "setup.sh").read_text()
    assert "pip install --quiet -r requirements.lock" in setup
    assert "pip install --quiet --no-deps -e ." in setup  # kebr itself adds nothing unpinned
