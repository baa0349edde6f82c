"""Imports run one way: pyproject.toml's [tool.importlinter] contracts hold (`lint-imports`), and a
contract of each kind catches its violation (a cycle, an import of a protected module, an import
from the bottom module, an import up the layers) in a package built for the test."""

import ast
import os
import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(cwd: Path, extra_path: Path | None = None, config: Path | None = None) -> subprocess.CompletedProcess:
    # COLUMNS: rich would wrap a long contract name at the terminal's width
    env = {**os.environ, "PYTHONPATH": str(extra_path or REPO), "COLUMNS": "200"}
    command = [str(LINT_IMPORTS), "--no-cache"] + (["--config", str(config)] if config else [])
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_kebr_keeps_its_import_contracts():
    contracts = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    # Each contract is checked and kept (a stale ignore_imports line fails the run: import-linter's
    # unmatched_ignore_imports_alerting is "error" by default).
    for contract in contracts:
        assert f"{contract['name']} KEPT" in result.stdout, contract["name"]
    assert f"Contracts: {len(contracts)} kept, 0 broken." in result.stdout


def test_contracts_catch_a_cycle_an_import_of_the_demo_one_from_config_and_one_up_the_layers(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "demo.py").write_text("")
    (package / "cli.py").write_text("from pkg import demo\n")
    (package / "config.py").write_text("def load():\n    from pkg import stages  # inside a function: counts too\n")
    (package / "stages.py").write_text("from pkg import config, demo\n")
    config = tmp_path / "contracts.toml"
    config.write_text(textwrap.dedent("""\
        [tool.importlinter]
        root_package = "pkg"

        [[tool.importlinter.contracts]]
        name = "Only the CLI imports the demo"
        type = "protected"
        protected_modules = ["pkg.demo"]
        allowed_importers = ["pkg.cli"]

        [[tool.importlinter.contracts]]
        name = "No import cycle"
        type = "acyclic_siblings"
        ancestors = ["pkg"]

        [[tool.importlinter.contracts]]
        name = "config is at the bottom"
        type = "forbidden"
        source_modules = ["pkg.config"]
        forbidden_modules = ["pkg.*"]

        [[tool.importlinter.contracts]]
        name = "Layers"
        type = "layers"
        containers = ["pkg"]
        layers = ["cli", "stages", "config"]
        """))
    result = lint_imports(tmp_path, extra_path=tmp_path, config=config)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Only the demo's corpus writer" not in result.stdout  # kebr's own contracts are not read
    assert "Only the CLI imports the demo BROKEN" in result.stdout
    assert "No import cycle BROKEN" in result.stdout
    assert "config is at the bottom BROKEN" in result.stdout
    assert "pkg.stages -> pkg.demo" in result.stdout and "pkg.config -> pkg.stages" in result.stdout
    assert "Layers BROKEN" in result.stdout
    assert "Contracts: 0 kept, 4 broken." in result.stdout

    # Without the offending imports both contracts hold.
    (package / "stages.py").write_text("from pkg import config\n")
    (package / "config.py").write_text("")
    result = lint_imports(tmp_path, extra_path=tmp_path, config=config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 4 kept, 0 broken." in result.stdout


def function_level_kebr_imports(source: str) -> list[tuple[int, str]]:
    """(line, text) of every import of kebr's own modules inside a function or method of ``source``."""
    lines = source.splitlines()
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(node):
                if isinstance(inner, ast.ImportFrom) and (inner.module or "").split(".")[0] == "kebr" or \
                        isinstance(inner, ast.Import) and any(a.name.split(".")[0] == "kebr" for a in inner.names):
                    found.append((inner.lineno, lines[inner.lineno - 1]))
    return sorted(set(found))


def test_kebr_imports_its_modules_at_the_top_unless_a_comment_says_why():
    # Issue 16: an import inside a function only where the module would bring a heavy library
    # (torch, librosa, mediapipe, matplotlib, scikit-learn) into a process that does not need it,
    # with a comment on the line saying so.
    uncommented = [f"{path.relative_to(REPO)}:{line}: {text.strip()}"
                   for path in sorted((REPO / "kebr").rglob("*.py"))
                   for line, text in function_level_kebr_imports(path.read_text(encoding="utf-8"))
                   if "#" not in text]
    assert uncommented == []
    # The check sees both kinds of import, with and without a comment.
    sample = "def f():\n    from kebr.shards import x  # torch\n    import kebr.paths\n"
    assert [line for line, _ in function_level_kebr_imports(sample)] == [2, 3]


# The submit venv (.venv-slurm: Snakemake with numpy >= 2 and the SLURM plugin, scripts/setup.sh) loads
# the Snakefile, so every kebr module the Snakefile and its rules import must load without these.
NOT_IN_SUBMIT_VENV = ("h5py", "torch", "av", "librosa", "mediapipe", "faster_whisper", "ctranslate2",
                      "matplotlib", "sklearn", "scipy", "transformers", "tqdm", "opensmile")


def test_the_snakefile_imports_nothing_the_submit_venv_lacks():
    sources = [REPO / "Snakefile", *sorted((REPO / "rules").glob("*.smk"))]
    modules = sorted({m for path in sources for m in re.findall(r"^from (kebr[\w.]*) import", path.read_text(), re.M)} |
                     {f"kebr.{name.strip()}" for path in sources
                      for names in re.findall(r"^from kebr import ([\w, ]+)$", path.read_text(), re.M)
                      for name in names.split(",")})
    assert {"kebr.config", "kebr.ingest", "kebr.experiments", "kebr.model_cache"} <= set(modules)
    script = textwrap.dedent(f"""
        import importlib, sys
        class Absent:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {NOT_IN_SUBMIT_VENV!r}:
                    raise ImportError(f"{{name}} is not in the submit venv")
        sys.meta_path.insert(0, Absent())
        for module in {modules!r}:
            importlib.import_module(module)
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
