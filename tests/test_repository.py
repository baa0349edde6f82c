"""The README tells the truth about the code: the shard schema version, every config key, `kebr` command
and Snakemake target it names exist, its config snippets validate, and the repository root holds only
what it names. Also: why kebr.config validates the config rather than Snakemake's `validate`."""

import copy
import re
import shlex
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from kebr.cli import build_parser
from kebr.config import SCHEMA_PATH, load_config
from kebr.shards import SCHEMA_VERSION

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
SCHEMA = yaml.safe_load(SCHEMA_PATH.read_text())
CODE_BLOCKS = re.findall(r"```(\w*)\n(.*?)```", README, re.S)
INLINE = re.findall(r"(?<!`)`([^`\n]+)`(?!`)", re.sub(r"```.*?```", "", README, flags=re.S))


def schema_paths(node: dict, prefix: str = "") -> set[str]:
    """Every key path of the config schema, e.g. 'finetune.mcc.g'; a dataset's keys as 'datasets.*.root'."""
    if "$ref" in node:  # "#/$defs/<name>"
        node = SCHEMA["$defs"][node["$ref"].rsplit("/", 1)[1]]
    paths = set()
    for name, sub in node.get("properties", {}).items():
        paths |= {prefix + name} | schema_paths(sub, prefix + name + ".")
    if isinstance(node.get("additionalProperties"), dict):
        paths |= schema_paths(node["additionalProperties"], prefix + "*.")
    return paths


def test_readme_names_the_shard_schema_version():
    versions = set(re.findall(r"schema version (\d+)", README))
    assert versions == {str(SCHEMA_VERSION)}


def test_readme_config_keys_exist():
    paths = schema_paths(SCHEMA)
    names = {p.rsplit(".", 1)[-1] for p in paths}
    top = {p for p in paths if "." not in p}
    files = ("md", "csv", "tsv", "png", "svg", "html", "yaml", "json", "h5", "py", "smk")
    dotted = [t for t in INLINE if re.fullmatch(r"[a-z_]+(\.[a-z_]+)+", t) and t.split(".")[0] in top
              and t.rsplit(".", 1)[1] not in files]
    keyed = [t.split(":")[0] for t in INLINE if re.fullmatch(r"[a-z_]+:( .*)?", t)]
    assert len(dotted) >= 4 and len(keyed) >= 8
    assert [t for t in dotted if t not in paths] == []
    assert [t for t in keyed if t not in names] == []
    for lang, block in CODE_BLOCKS:
        if lang == "yaml":  # a config snippet must be valid config
            jsonschema.Draft202012Validator(SCHEMA).validate(yaml.safe_load(block))


def test_readme_commands_exist():
    parser = build_parser()
    commands = {name for a in parser._actions if hasattr(a, "choices") and a.choices for name in a.choices}
    named = [line.split()[1] for _, block in CODE_BLOCKS for line in block.splitlines() if line.startswith("kebr ")]
    named += [t.split()[1] for t in INLINE if t.startswith("kebr ") and not t.startswith("kebr --")]
    assert len(named) >= 4
    assert sorted(set(named) - commands) == []


def test_readme_snakemake_targets_exist():
    listed = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--list-target-rules"],
                            cwd=REPO, capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr[-2000:]
    rules = set(listed.stdout.split())
    datasets = {name for lang, block in CODE_BLOCKS if lang == "yaml"
                for name in yaml.safe_load(block).get("datasets", {})} | {"<dataset>"}
    named = set()
    for _, block in CODE_BLOCKS:
        for line in block.splitlines():
            if line.startswith("snakemake ") or " snakemake " in line:
                words = shlex.split(line.split("snakemake ", 1)[1].split("#")[0].split("&&")[0])
                named |= {w for w in words if re.fullmatch(r"[a-z][a-z0-9_]*", w)}
    named |= {t for t in INLINE if re.fullmatch(r"(features|pretrain|finetune)_<dataset>|table\d|gsweep|demo", t)}
    assert {"demo", "table2", "features_<dataset>"} <= named
    demo_dataset = next(iter(yaml.safe_load((REPO / "config.yaml").read_text())["datasets"]))
    for target in named:
        prefix, _, dataset = target.partition("_")
        if target not in rules:
            assert dataset in datasets and f"{prefix}_{demo_dataset}" in rules, f"README names target {target!r}"


def test_repository_root_holds_only_what_the_readme_names():
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True)
    if tracked.returncode != 0:
        pytest.skip("not a git checkout")
    layout = README.split("## Layout", 1)[1]
    named = {t.rstrip("/").split("/")[0] for t in re.findall(r"`([^`]+)`", layout)}
    root = {path.split("/")[0] for path in tracked.stdout.splitlines()}
    assert sorted(root - named) == []


def test_snakemake_validation_would_fill_a_datasets_overrides():
    """Why kebr.config keeps its own validator: Snakemake's `validate` fills the same defaults everywhere
    but in a dataset's `pretrain:`/`finetune:` overrides, where it fills every key, so a top-level
    setting (say `finetune.seeds`) would no longer reach that dataset's runs."""
    from snakemake.utils import validate

    raw = yaml.safe_load((REPO / "config.yaml").read_text())
    ours = load_config(REPO / "config.yaml")
    theirs = copy.deepcopy(raw)
    validate(theirs, str(SCHEMA_PATH), set_default=True)
    assert {k: v for k, v in theirs.items() if k != "datasets"} == {k: v for k, v in ours.items() if k != "datasets"}
    for name, dataset in ours["datasets"].items():
        for key, value in dataset.items():
            if key in ("pretrain", "finetune"):
                assert value == raw["datasets"][name][key]  # ours: only the keys the user wrote
                assert theirs["datasets"][name][key].keys() > value.keys()  # Snakemake's: every default
            else:
                assert theirs["datasets"][name][key] == value


def test_every_test_the_readme_cites_exists():
    """The Guarantees table cites `test_file.py::test_name` (and `::test_name` for the same file)."""
    cited, current = [], None
    for ref in re.findall(r"`((?:test_\w+\.py)?(?:::test_\w+)?)`", README):
        file, _, name = ref.partition("::")
        current = file or current
        if name:
            cited.append((current, name))
        elif file:
            cited.append((file, None))
    assert len(cited) > 20
    for file, name in cited:
        path = REPO / "tests" / file
        assert path.is_file(), f"README cites {file}, which does not exist"
        if name:
            assert re.search(rf"^def {name}\(", path.read_text(), re.M), f"README cites {file}::{name}, not defined"
