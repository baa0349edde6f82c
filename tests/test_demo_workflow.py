"""The demo chain through Snakemake on a small demo corpus: shards -> pretraining -> fine-tuning over
seeds -> the demo table, then `kebr predict` and `kebr evaluate` on its outputs."""

import csv
import json
import math
import subprocess
import sys

import numpy as np
import pytest

from kebr.metrics import regression_metrics


@pytest.fixture(scope="module")
def demo(demo_run):
    return demo_run


def test_demo_table_is_the_mean_over_seeds(demo):
    table = (demo / "out" / "tables" / "demo.md").read_text()
    assert "| demo_labelled / demo_unlabelled / full | 2 | 6 of 686 |" in table  # test clips scored / MOSI's
    assert "| demo_labelled / none / no_pretrain | 2 | 6 of 686 |" in table
    assert "| MOSI / voxceleb1 / full | 84.4/87.2 |" in table  # the paper's MOSI numbers beside ours
    # The text-only baseline: a row of its own, marked as not the paper's, with no paper numbers.
    baseline = next(line for line in table.splitlines() if line.startswith("| demo_labelled / none / text_only | 2 | 6 |"))
    assert "| extra: text-only baseline" in baseline and "not the paper's | - | - |" in baseline
    with (demo / "out" / "tables" / "demo.csv").open() as f:
        rows = {r["run"]: r for r in csv.DictReader(f)}
    runs = demo / "out" / "finetune" / "demo_labelled"
    for label, run_dir in (("demo_labelled / demo_unlabelled / full", runs / "demo_unlabelled" / "full"),
                           ("demo_labelled / none / no_pretrain", runs / "none" / "no_pretrain"),
                           ("demo_labelled / none / text_only", runs / "none" / "text_only")):
        metrics = [json.loads((run_dir / f"seed{s}" / "metrics.json").read_text()) for s in (0, 1)]
        assert float(rows[label]["mae_mean"]) == pytest.approx(np.mean([m["mae"] for m in metrics]))
        assert float(rows[label]["acc2_has0_std"]) == pytest.approx(np.std([m["acc2_has0"] for m in metrics]))


def test_finetune_run_outputs_agree(demo):
    run = demo / "out" / "finetune" / "demo_labelled" / "demo_unlabelled" / "full" / "seed0"
    metrics = json.loads((run / "metrics.json").read_text())
    with (run / "predictions.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == metrics["n_test"] > 0
    recomputed = regression_metrics([float(r["prediction"]) for r in rows], [float(r["label"]) for r in rows])
    assert recomputed["mae"] == pytest.approx(metrics["mae"], abs=1e-5)
    # a finished run keeps only its best state, which `kebr predict` loads
    assert sorted(p.name for p in run.glob("epoch-*")) == [f"epoch-{metrics['best_epoch']:04d}"]
    result = subprocess.run([sys.executable, "-m", "kebr", "evaluate", str(run / "predictions.csv")],
                            capture_output=True, text=True, check=True)
    assert json.loads(result.stdout)["mae"] == pytest.approx(metrics["mae"], abs=1e-5)
    pretrain_log = (demo / "out" / "pretrain" / "demo_unlabelled" / "full" / "log.csv").read_text().splitlines()
    assert len(pretrain_log) == 3 and pretrain_log[0].startswith("epoch,loss,l_task,l_mcc,cos_a,cos_v")


def test_predict_scores_a_video_and_names_a_bad_one(demo, tmp_path):
    run = demo / "out" / "finetune" / "demo_labelled" / "demo_unlabelled" / "full" / "seed0"
    video = next((demo / "corpus" / "mosi" / "Raw").rglob("*.mp4"))
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"")
    result = subprocess.run([sys.executable, "-m", "kebr", "predict", str(video), str(broken), "--checkpoint", str(run)],
                            capture_output=True, text=True)
    assert result.returncode == 1
    good, bad = (json.loads(line) for line in result.stdout.splitlines())
    assert good["clip"] == str(video) and math.isfinite(good["score"]) and len(good["text"]) > 5
    assert "zero-byte" in bad["error"] and f"cannot score {broken}" in result.stderr
