"""Fixtures several test modules share. The small demo chain (shards -> pretraining -> fine-tuning
over two seeds -> the demo table and g sweep, and every figure) is run once per session: the
demo, report and SLURM tests all read its outputs, and running it again for each would cost minutes.
So are the tiny training runs (tests/tiny_training.py) that the kebr/train tests read."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kebr.demo.corpus import write_demo_corpora

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]


def planned_jobs(root: Path, args: list[str], env: dict[str, str] = ENV) -> dict[str, int]:
    """Jobs per rule that `snakemake -n <args>` plans in ``root`` ({} when nothing is to be done)."""
    result = subprocess.run(SNAKEMAKE + ["-n", *args], cwd=root, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    if "Nothing to be done" in result.stdout + result.stderr:
        return {}
    stats = result.stdout.split("Job stats:")[1].split("total")[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", stats, re.M)}

# A demo small enough for the test suite: 6 unlabelled clips, 15 labelled ones, a one-layer TCMF,
# Fig. 4 at the full recipe's g only (each further g value would cost two more fine-tuning runs).
DEMO_CONFIG = """
results: out
datasets:
  demo_unlabelled:
    layout: voxceleb2
    root: corpus/voxceleb2
    pretrain: {epochs: 2, batch_size: 4, num_workers: 0}
    resources: {runtime: {pretrain: 10}, mem_mb: {pretrain: 4000}}
  demo_labelled:
    layout: mmsa_raw
    root: corpus/mosi
    pretrained_on: demo_unlabelled
    finetune: {epochs: 3, batch_size: 4, seeds: [0, 1], num_workers: 0, lr_backbone: 5.0e-5, lr_head: 1.0e-3}
    resources: {mem_mb: {finetune: 4000}}
model: {num_layers: 1, d_embed: 32}
demo_gsweep: [0.2]
"""


def write_small_demo(root: Path) -> Path:
    """The test demo's corpora and config.yaml in ``root`` (what `demo_run` runs Snakemake on)."""
    write_demo_corpora(root / "corpus", seed=1, n_unlabelled=6, n_labelled_videos=5, clips_per_video=3, dirty=False)
    (root / "config.yaml").write_text(DEMO_CONFIG)
    return root


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """The folder in which `snakemake --cores 2 demo` ran on the small demo (outputs under out/)."""
    root = write_small_demo(tmp_path_factory.mktemp("demo"))
    result = subprocess.run(SNAKEMAKE + ["--cores", "2", "demo"], cwd=root, env=ENV, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-4000:]
    return root


# The tiny training runs (tests/tiny_training.py): session fixtures, so that the pretraining and the
# fine-tuning run several test files read are trained once. tiny_training is imported in the fixtures,
# not here, so that test files that train nothing do not import torch for them.
@pytest.fixture(scope="session")
def train_shards(tmp_path_factory) -> list[Path]:
    """Two shards of 12 clips (tiny_training.write_train_shards)."""
    from tiny_training import write_train_shards

    return write_train_shards(tmp_path_factory.mktemp("shards"))


@pytest.fixture(scope="session")
def train_runs(tmp_path_factory) -> Path:
    """The folder of the shared runs (``pretrain``, ``finetune``) and of runs compared with them."""
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="session")
def pretrained(train_shards, train_runs) -> Path:
    """The newest state of a pretraining run with tiny_training.PRETRAIN (``train_runs/pretrain``)."""
    from tiny_training import CONFIG, PRETRAIN

    from kebr.train.pretrain import pretrain

    return pretrain(train_shards, train_runs / "pretrain", model_config=CONFIG, settings=PRETRAIN)


@pytest.fixture(scope="session")
def finetuned(train_shards, train_runs, pretrained) -> dict:
    """The metrics of fine-tuning ``pretrained`` with tiny_training.FINETUNE (``train_runs/finetune``)."""
    from tiny_training import FINETUNE, FINETUNE_SEED, FT_CONFIG

    from kebr.train.finetune import finetune

    return finetune(train_shards, train_runs / "finetune", model_config=FT_CONFIG, pretrained=pretrained,
                    settings=FINETUNE, seed=FINETUNE_SEED)
