"""Kill training anywhere, rerun, same result (issue 6 item 7): `kebr pretrain` and `kebr finetune`,
through the real CLI on the small demo's shards (`demo_run`), are SIGKILLed at a random step (a random
delay after a random progress line: mid-step, mid-epoch or mid-save), rerun to the end, and their
final weights, metrics and predictions equal an uninterrupted run's, bit for bit. The uninterrupted
run is made here, beside the killed one and with the same thread count (one), because float results
depend on it: the demo chain's own runs used Snakemake's thread setting. The kill points are drawn
from KEBR_KILL_SEED (random when unset; printed on failure)."""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from kebr.shards import ShardDataset
from kebr.train.checkpoint import WEIGHTS

SEED = int(os.environ.get("KEBR_KILL_SEED", random.randrange(10**6)))
ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def demo(demo_run) -> Path:
    """The demo folder with kill.yaml: its config plus a progress line per step (to kill on), a state
    after every epoch, and fine-tuning shortened to 2 epochs."""
    config = yaml.safe_load((demo_run / "config.yaml").read_text())
    # A state after every epoch (checkpoint_minutes 0), so a kill can land mid-save and a rerun resumes.
    config["datasets"]["demo_unlabelled"].setdefault("pretrain", {}).update(log_every_steps=1, checkpoint_minutes=0)
    config["datasets"]["demo_labelled"].setdefault("finetune", {}).update(log_every_steps=1, epochs=2,
                                                                         checkpoint_minutes=0)
    (demo_run / "kill.yaml").write_text(yaml.safe_dump(config))
    return demo_run


def total_steps(demo: Path, dataset: str, stage: str) -> int:
    """Optimizer steps of the demo's whole run on ``dataset`` (one progress line each)."""
    settings = yaml.safe_load((demo / "kill.yaml").read_text())["datasets"][dataset][stage]
    shards = sorted((demo / "out" / dataset / "shards").glob("*.h5"))
    clips = len(ShardDataset(shards) if stage == "pretrain" else ShardDataset(shards, split="train", labelled=True))
    return settings["epochs"] * math.ceil(clips / settings["batch_size"])


def run_and_kill(command: list[str], cwd: Path, after_lines: int, delay_s: float) -> int:
    """Start ``command``, SIGKILL it ``delay_s`` after its ``after_lines``-th progress line; its exit code."""
    proc = subprocess.Popen(command, cwd=cwd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen = 0
    for line in proc.stderr:
        seen += " steps | " in line
        if seen == after_lines:
            time.sleep(delay_s)
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait()
    proc.stderr.close()
    return proc.returncode


def kill_and_rerun(command: list[str], cwd: Path, out: Path, after: int, delay_s: float) -> Path:
    """The uninterrupted run (in the background, into ``out``/uninterrupted) beside the killed and rerun
    one (``out``/killed); returns ``out``."""
    out.mkdir(parents=True)
    with (out / "uninterrupted.log").open("w") as log:
        reference = subprocess.Popen(command + ["--out", str(out / "uninterrupted")], cwd=cwd, env=ENV,
                                     stdout=subprocess.DEVNULL, stderr=log)
        killed = command + ["--out", str(out / "killed")]
        assert run_and_kill(killed, cwd, after, delay_s) == -signal.SIGKILL, f"KEBR_KILL_SEED={SEED}"
        subprocess.run(killed, cwd=cwd, env=ENV, check=True, capture_output=True)
        assert reference.wait() == 0, (out / "uninterrupted.log").read_text()[-3000:]
    return out


def same_weights(a: Path, b: Path) -> list[str]:
    wa, wb = load_file(str(a / WEIGHTS)), load_file(str(b / WEIGHTS))
    assert wa.keys() == wb.keys()
    return [k for k in wa if not (wa[k] == wb[k]).all()]


def test_killed_pretraining_reruns_to_the_same_weights(demo):
    rng = random.Random(SEED)
    command = [sys.executable, "-m", "kebr", "pretrain", "--config", "kill.yaml", "--dataset", "demo_unlabelled",
               "--variant", "full"]
    after, delay = rng.randint(1, total_steps(demo, "demo_unlabelled", "pretrain") - 1), rng.uniform(0, 0.3)
    runs = kill_and_rerun(command, demo, demo / "out" / "kill_pretrain", after, delay)
    final = json.loads((runs / "uninterrupted" / "final.json").read_text())["state"]
    assert json.loads((runs / "killed" / "final.json").read_text())["state"] == final
    where = f"KEBR_KILL_SEED={SEED}: killed after line {after} + {delay:.2f} s"
    assert same_weights(runs / "uninterrupted" / final, runs / "killed" / final) == [], where


def test_killed_finetuning_reruns_to_the_same_results(demo):
    rng = random.Random(SEED + 1)
    command = [sys.executable, "-m", "kebr", "finetune", "--config", "kill.yaml", "--dataset", "demo_labelled",
               "--pretrained", "out/pretrain/demo_unlabelled/full", "--variant", "full", "--seed", "0"]
    after, delay = rng.randint(1, total_steps(demo, "demo_labelled", "finetune") - 1), rng.uniform(0, 0.3)
    runs = kill_and_rerun(command, demo, demo / "out" / "kill_finetune", after, delay)
    reference, out = runs / "uninterrupted", runs / "killed"
    where = f"KEBR_KILL_SEED={SEED}: killed after line {after} + {delay:.2f} s"
    assert json.loads((out / "metrics.json").read_text()) == json.loads((reference / "metrics.json").read_text()), where
    assert (out / "predictions.csv").read_bytes() == (reference / "predictions.csv").read_bytes(), where
    best = (reference / "best").resolve().name
    assert same_weights(reference / best, out / best) == [], where
