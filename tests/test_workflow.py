"""The Snakemake workflow as a user drives it: lint-clean and formatted, the paper's tables plan from
raw corpora (the conda env and the lock: tests/test_environment.py)."""

import re
import subprocess
import sys
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]

PAPER_CONFIG = """
results: out
text: {model: bert-large-uncased}
datasets:
  voxceleb1: {layout: voxceleb1, root: corpora/VoxCeleb1}
  voxceleb2: {layout: voxceleb2, root: corpora/VoxCeleb2, subsets: [dev, test]}
  mosi: {layout: mmsa_raw, root: corpora/MOSI}
  mosei: {layout: mmsa_raw, root: corpora/MOSEI}
"""
# What the workflow checks before it schedules anything: each corpus's root and its layout's folders.
# Planning a table needs no clips, so empty corpora are enough for a dry run.
PAPER_CORPORA = ["VoxCeleb1/wav/", "VoxCeleb2/dev/mp4/", "VoxCeleb2/test/mp4/", "MOSI/label.csv", "MOSEI/label.csv"]


def empty_corpora(root: Path, entries: list[str]) -> None:
    for entry in entries:
        path = root / "corpora" / entry
        if entry.endswith("/"):
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("video_id,clip_id,text,label,mode\n")


def job_counts(output: str) -> dict[str, int]:
    stats = output.split("Job stats:")[1].split("total")[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", stats, re.M)}


def test_paper_tables_plan_from_raw_corpora(tmp_path):
    (tmp_path / "paper.yaml").write_text(PAPER_CONFIG)
    empty_corpora(tmp_path, PAPER_CORPORA)
    result = subprocess.run(SNAKEMAKE + ["--configfile", "paper.yaml", "-n", "table2", "table3", "table4", "gsweep"],
                            cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    counts = job_counts(result.stdout)
    # 4 corpora planned; pretraining (the paper recipe): full on VoxCeleb1 and 2, bert_base, no_tcmf,
    # no_mcc on VoxCeleb1.
    assert counts["plan"] == 4 and counts["pretrain"] == 5
    # fine-tuning x 5 seeds: table2 4 rows + 4 extra rows (the reference's MCC), table3 +2 bert_base,
    # table4 +4 ablations and the text_only baseline, gsweep +7 values on MOSI and +7 on MOSEI (bert_large
    # and g=0.2 are the recipe's full one, and g=0.5 is g=-0.5 under the paper's MCC form, period 1 in g:
    # none is trained twice).
    assert counts["finetune"] == 5 * (4 + 4 + 2 + 5 + 7 + 7)


def test_table2_dry_run_from_a_fresh_clone_plans_and_prints_the_paper_recipe(tmp_path):
    """Only the four corpora configured: table2 plans BERT-large runs of the paper recipe (paper-<variant>)
    and says so while the DAG is built, with the deviations this config forces."""
    (tmp_path / "c.yaml").write_text("\n".join(line for line in PAPER_CONFIG.splitlines() if "text:" not in line))
    empty_corpora(tmp_path, PAPER_CORPORA)
    result = subprocess.run(SNAKEMAKE + ["--configfile", "c.yaml", "-n", "-p", "table2"], cwd=tmp_path,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert job_counts(result.stdout)["finetune"] == 5 * 8 and job_counts(result.stdout)["pretrain"] == 2
    for pretrain in ("voxceleb1", "voxceleb2"):
        assert f"--dataset {pretrain} --variant paper-full --until-epoch" in result.stdout
    assert ("--dataset mosi --pretrained out/pretrain/voxceleb1/paper-full --variant paper-mcc_reference --seed 4"
            in result.stdout)
    said = result.stderr
    assert "kebr: table2 runs recipe paper (kebr/recipes/paper.yaml" in said
    # the file names the recipe, and no other recipe's table is planned
    assert "--out-md out/tables/table2-paper.md --out-csv out/tables/table2-paper.csv" in result.stdout
    assert "table2-reference" not in result.stdout and "table2-config" not in result.stdout
    # the paper's values where it states them (Eq. 7's LN residual, 4.2's 1e-4 for TCMF), the code's where silent
    for value in ("text.model=bert-large-uncased", "model.residual=layernorm", "finetune.lr_fusion=0.0001",
                  "model.mask_padding=false",
                  "model.masked_mean=false", "finetune.eval_amp=false", "pretrain.frozen_lm_dropout=true",
                  "pretrain.bucket_by_length=false", "finetune.mcc.text_positions=all", "finetune.mcc.g=0.2",
                  "pretrain.save_epochs=[1, 5, 10, 20, 50, 100, 150, 200]"):
        assert value in said, value
    assert "kebr: table2 deviates from the paper: `visual.backend`: mediapipe (paper: openface_csv" in said
    assert said.count("kebr: table2 runs recipe paper") == 1


def test_a_table_of_another_recipe_is_refused_and_the_reference_recipe_plans_its_own(tmp_path):
    """No target trains a second recipe unasked: asking for the reference recipe's table file under the
    paper recipe fails before any job, saying what to set; set, the reference recipe plans its own
    table file and runs (reference-<variant>, one seed: main.py's 666)."""
    (tmp_path / "c.yaml").write_text(PAPER_CONFIG)
    empty_corpora(tmp_path, PAPER_CORPORA)
    result = subprocess.run(SNAKEMAKE + ["--configfile", "c.yaml", "-n", "out/tables/table2-reference.md"],
                            cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode != 0 and "Job stats" not in result.stdout
    assert ("table2-reference: this config runs paper_recipe.name: paper, so its paper targets build table2-paper; "
            "to build table2-reference (and train its runs), set paper_recipe.name: reference") in result.stdout + result.stderr
    (tmp_path / "c.yaml").write_text(PAPER_CONFIG + "paper_recipe: {name: reference}\n")
    result = subprocess.run(SNAKEMAKE + ["--configfile", "c.yaml", "-n", "-p", "table2"], cwd=tmp_path,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "--out-md out/tables/table2-reference.md" in result.stdout and "table2-paper" not in result.stdout
    assert job_counts(result.stdout)["finetune"] == 4 and job_counts(result.stdout)["pretrain"] == 2
    assert "--variant reference-full --seed 666" in result.stdout
    assert "kebr: table2 runs recipe reference (kebr/recipes/reference.yaml" in result.stderr
    assert "finetune.select_by=valid_loss_reference" in result.stderr and "model.residual=identity" in result.stderr


def test_table_without_its_corpora_is_a_clear_error(tmp_path):
    (tmp_path / "c.yaml").write_text("results: out\ndatasets: {}\n")
    result = subprocess.run(SNAKEMAKE + ["--configfile", "c.yaml", "-n", "table2"], cwd=tmp_path,
                            capture_output=True, text=True)
    assert result.returncode != 0
    assert "table2 needs datasets ['mosei', 'mosi', 'voxceleb1', 'voxceleb2']" in result.stdout + result.stderr


def test_missing_corpus_fails_before_any_job_and_paths_are_quoted(tmp_path):
    """A target whose corpus is missing fails while the DAG is built, naming the dataset and the path;
    datasets the targets do not need are not checked. Every path reaches the shell quoted."""
    (tmp_path / "paper.yaml").write_text(PAPER_CONFIG.replace("results: out", "results: out dir"))
    empty_corpora(tmp_path, [e for e in PAPER_CORPORA if not e.startswith("MOSI/")])
    result = subprocess.run(SNAKEMAKE + ["--configfile", "paper.yaml", "-n", "features_mosei", "features_mosi"],
                            cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode != 0 and "Job stats" not in result.stdout
    assert "dataset 'mosi' (layout mmsa_raw): root corpora/MOSI does not exist" in result.stdout + result.stderr
    result = subprocess.run(SNAKEMAKE + ["--configfile", "paper.yaml", "-n", "-p", "features_mosei"],
                            cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "--dataset mosei --out 'out dir/mosei/plan' > 'out dir/logs/mosei/plan.log'" in result.stdout


def test_lint_clean():
    result = subprocess.run(SNAKEMAKE + ["--lint"], cwd=REPO, capture_output=True, text=True)
    assert "Congratulations, your workflow is in a good condition!" in result.stdout + result.stderr


def test_snakefmt_and_ruff_clean():
    snakefmt = subprocess.run([sys.executable, "-m", "snakefmt", "--check", "Snakefile", "rules"], cwd=REPO,
                              capture_output=True, text=True)
    assert snakefmt.returncode == 0, snakefmt.stderr
    ruff = subprocess.run([sys.executable, "-m", "ruff", "check", "kebr", "bench", "tests"], cwd=REPO,
                          capture_output=True, text=True)
    assert ruff.returncode == 0, ruff.stdout
