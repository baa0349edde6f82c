"""The Snakemake workflow as a user drives it: lint-clean, the paper's tables plan from raw corpora,
and the conda env lists exactly the package's dependencies."""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]

PAPER_CONFIG = """
results: out
text: {model: bert-large-uncased}
datasets:
  voxceleb1: {layout: voxceleb1, root: /data/VoxCeleb1}
  voxceleb2: {layout: voxceleb2, root: /data/VoxCeleb2, subsets: [dev, test]}
  mosi: {layout: mmsa_raw, root: /data/MOSI}
  mosei: {layout: mmsa_raw, root: /data/MOSEI}
"""


def job_counts(output: str) -> dict[str, int]:
    stats = output.split("Job stats:")[1].split("total")[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", stats, re.M)}


def test_paper_tables_plan_from_raw_corpora(tmp_path):
    (tmp_path / "paper.yaml").write_text(PAPER_CONFIG)
    result = subprocess.run(SNAKEMAKE + ["--configfile", "paper.yaml", "-n", "table2", "table3", "table4", "gsweep"],
                            cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    counts = job_counts(result.stdout)
    # 4 corpora planned; pretraining: full on VoxCeleb1 and 2, bert_base, no_tcmf, no_mcc on VoxCeleb1.
    assert counts["plan"] == 4 and counts["pretrain"] == 5
    # fine-tuning x 5 seeds: table2 4 rows, table3 +2 bert_base, table4 +4 ablations, gsweep +8 values
    # (bert_large and g=0.2 are the full recipe under this config and are not trained twice).
    assert counts["finetune"] == 5 * (4 + 2 + 4 + 8)


def test_table_without_its_corpora_is_a_clear_error(tmp_path):
    (tmp_path / "c.yaml").write_text("results: out\ndatasets: {}\n")
    result = subprocess.run(SNAKEMAKE + ["--configfile", "c.yaml", "-n", "table2"], cwd=tmp_path,
                            capture_output=True, text=True)
    assert result.returncode != 0
    assert "table2 needs datasets ['mosei', 'mosi', 'voxceleb1', 'voxceleb2']" in result.stdout + result.stderr


def test_lint_clean():
    result = subprocess.run(SNAKEMAKE + ["--lint"], cwd=REPO, capture_output=True, text=True)
    assert "Congratulations, your workflow is in a good condition!" in result.stdout + result.stderr


def test_conda_env_matches_pyproject():
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    env = yaml.safe_load((REPO / "envs" / "kebr.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert [d for d in pip if not d.startswith("torch")] == [d for d in deps if not d.startswith("torch")]


def test_snakefmt_and_ruff_clean():
    snakefmt = subprocess.run([sys.executable, "-m", "snakefmt", "--check", "Snakefile", "rules"], cwd=REPO,
                              capture_output=True, text=True)
    assert snakefmt.returncode == 0, snakefmt.stderr
    ruff = subprocess.run([sys.executable, "-m", "ruff", "check", "kebr", "bench", "tests"], cwd=REPO,
                          capture_output=True, text=True)
    assert ruff.returncode == 0, ruff.stdout
