"""bench/gpu_check.sh --dry-run: every GPU check runs its real code path at tiny size on the CPU (int8
ASR, gloo DDP under torchrun, torch.compile's graph capture) and prints one JSON line with its numbers;
without a GPU a check says why it did not run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# One thread per process: the checks' numbers mean nothing on a CPU, and the test should not
# oversubscribe a shared machine.
ENV = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1",
       "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def test_gpu_check_dry_run_runs_every_check():
    result = subprocess.run(["bash", str(REPO / "bench" / "gpu_check.sh"), "--dry-run"], env=ENV,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    checks = {c["check"]: c for c in map(json.loads, result.stdout.splitlines())}
    assert list(checks) == ["asr_dry_run", "train_dry_run", "ddp_dry_run", "compile_dry_run"], result.stdout
    assert all(c["ok"] for c in checks.values()), result.stdout + result.stderr[-3000:]
    asr = checks["asr_dry_run"]
    assert asr["rtfx_clips"] > 0 and asr["rtfx_long"] > 0 and asr["long_audio_s"] == 5
    assert asr["word_recall_clips"] >= 0.8 and asr["word_recall_long"] >= 0.8  # a real decode of the speech
    train = checks["train_dry_run"]
    assert train["text_model"] == "bundled" and train["pretrain_step"]["samples_per_s"] > 0
    assert train["finetune_loop"]["bucketed"]["mean_batch_tokens"] <= train["finetune_loop"]["random"]["mean_batch_tokens"]
    assert train["pretrain_loop"]["sidecar_mb_per_1000_clips"] > 0
    assert (checks["ddp_dry_run"]["backend"], checks["ddp_dry_run"]["world_size"]) == ("gloo", 1)
    compiled = checks["compile_dry_run"]
    assert compiled["loss_compiled"] == compiled["loss_eager"]  # captured graphs compute the same losses


def test_a_gpu_check_without_a_gpu_says_why(tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_check.py"), "asr", "--work", str(tmp_path)],
                            env=ENV, capture_output=True, text=True, check=True)
    assert json.loads(result.stdout) == {"check": "asr", "ok": False,
                                         "skipped": "no CUDA device visible (run with --dry-run on a CPU)"}
