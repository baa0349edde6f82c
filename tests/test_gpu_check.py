"""bench/gpu_check.sh --dry-run: every GPU check runs its real code path at tiny size on the CPU (the
ASR stage's worker on decoded files with language ID, pretraining through the real loader and LM
cache, fp32 steps, gloo DDP under torchrun, torch.compile's graph capture) and prints one JSON line
with its numbers; without a GPU a check says why it did not run."""

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
    assert list(checks) == ["asr_dry_run", "loader_dry_run", "steps_dry_run", "compile_dry_run", "ddp_dry_run"]
    assert all(c.get("ok", True) for c in checks.values()), result.stdout + result.stderr[-3000:]
    asr = checks["asr_dry_run"]
    assert asr["clips_per_s"] > 0 and asr["rtfx"] > 0 and asr["wer"] <= 0.2  # a real decode of the speech
    loader = checks["loader_dry_run"]
    assert loader["shards"] == 4 and loader["clips"] == 32 and loader["pretrain_samples_per_s"] > 0
    assert loader["loader_steps_per_s"] > 0 and loader["in_memory_steps_per_s"] > 0
    steps = checks["steps_dry_run"]
    assert steps["minilm_fp32_pretrain"]["samples_per_s"] > 0 and steps["paper_recipe_step"]["samples_per_s"] > 0
    assert (checks["ddp_dry_run"]["backend"], checks["ddp_dry_run"]["world_size"]) == ("gloo", 1)
    compiled = checks["compile_dry_run"]
    assert compiled["loss_compiled"] == compiled["loss_eager"]  # captured graphs compute the same losses
    assert 1 <= compiled["graphs_compiled"] <= 8  # a few fixed text lengths, not one graph per batch


def test_a_gpu_check_without_a_gpu_says_why(tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_check.py"), "loader", "--work", str(tmp_path)],
                            env=ENV, capture_output=True, text=True, check=True)
    assert json.loads(result.stdout) == {"check": "loader", "ok": False,
                                         "skipped": "no CUDA device visible (run with --dry-run on a CPU)"}
