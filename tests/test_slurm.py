"""The SLURM path: the demo through a real one-node SLURM (scripts/slurm-local.sh) with
profiles/slurm, equal to the local run; and the sbatch request of every job of a VoxCeleb2-sized
plan, rendered by the plugin's own code without submitting anything.

Both run the Snakemake of the submit venv (.venv-slurm, scripts/setup.sh: Snakemake +
snakemake-executor-plugin-slurm, whose numpy >= 2 cannot share .venv with mediapipe); the jobs run
this interpreter's venv, which they find on the PATH the submitting process exports to them.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import ENV, REPO
from kebr.train.checkpoint import read_configs

PROFILE = REPO / "profiles" / "slurm"
GPU_RULES = ("asr", "pretrain_part", "pretrain", "finetune")


def submit_python() -> Path:
    """The submit venv's Python: $KEBR_SUBMIT_PYTHON, else .venv-slurm beside this checkout or
    beside the venv running the tests."""
    candidates = [os.environ.get("KEBR_SUBMIT_PYTHON"), REPO / ".venv-slurm" / "bin" / "python",
                  Path(sys.prefix).parent / ".venv-slurm" / "bin" / "python"]
    for candidate in candidates:
        if candidate and Path(candidate).exists():
            return Path(candidate)
    message = "no submit venv (.venv-slurm with snakemake-executor-plugin-slurm): run `bash scripts/setup.sh`"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def local_cluster_args() -> list[str]:
    """What this one-node cluster needs beyond profiles/slurm: its partition for the profile's
    placeholders (no accounts: there is no accounting database), job status from squeue (sacct
    needs slurmdbd; MinJobAge keeps finished jobs in squeue), a first status check after 5 s, and
    at most the node's CPUs per job."""
    cpus = int(subprocess.run(["sinfo", "-h", "-o", "%c"], capture_output=True, text=True, check=True).stdout.split()[0])
    return ["--default-resources", "slurm_partition=local",
            "--set-resources", *[f"{rule}:slurm_partition=local" for rule in GPU_RULES],
            "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "5",
            "--max-threads", str(cpus)]


def submitted_jobs(log: str) -> tuple[dict[str, str], set[str]]:
    """(Snakemake job id -> SLURM job id, for every job the log says went through sbatch, alone or
    as a task of a job array; the ids of the finished jobs)."""
    through_sbatch = dict(re.findall(r"^Job (\d+) has been submitted with SLURM jobid (\d+)", log, re.M))
    for ids, array, first in re.findall(
            r"^Submitted array job with Snakemake IDs (\S+) and SLURM job ID (\d+)\. The individual task IDs are (\d+)-",
            log, re.M):
        through_sbatch.update({job: f"{array}_{int(first) + k}" for k, job in enumerate(ids.split(","))})
    finished = set(re.findall(r"^Finished jobid: (\d+)", log, re.M))
    return through_sbatch, finished


@pytest.mark.slurm
def test_demo_through_slurm_equals_the_local_run(demo_run, tmp_path):
    if shutil.which("sbatch") is None:
        pytest.skip("no sbatch: start the local cluster with `bash scripts/slurm-local.sh` (as root)")
    python = submit_python()
    status = subprocess.run(["bash", str(REPO / "scripts" / "slurm-local.sh"), "status"], capture_output=True, text=True)
    assert status.returncode == 0, f"the local SLURM is not up: {status.stderr}"
    # The local run's corpus and config (re-encoding the demo corpus does not give the same bytes).
    shutil.copytree(demo_run / "corpus", tmp_path / "corpus")
    shutil.copy(demo_run / "config.yaml", tmp_path / "config.yaml")
    # Pretraining (runtime 10 min in the demo config) as a chain of 2 jobs under a 5 min cap.
    (tmp_path / "cluster.yaml").write_text("resources: {max_runtime: 5}\n")
    finetune = "out/finetune/demo_labelled/demo_unlabelled/full/seed0"
    targets = ["out/demo_unlabelled/clips.tsv", "out/demo_labelled/clips.tsv", f"{finetune}/metrics.json"]
    result = subprocess.run(
        [str(python), "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--profile", str(PROFILE),
         *local_cluster_args(), "--configfile", "config.yaml", "cluster.yaml", "--", *targets],
        cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=900)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-6000:]

    through_sbatch, finished = submitted_jobs(log)
    # plan, asr, audio, visual, assemble and report x 2 corpora, 2 pretraining jobs, 1 fine-tuning.
    assert len(finished) == 15
    assert set(through_sbatch) == finished, f"jobs not submitted with sbatch: {finished - set(through_sbatch)}"
    assert "rule pretrain_part:" in log
    # SLURM's own record (MinJobAge keeps it an hour): every one of those jobs completed.
    slurm_ids = sorted({job.split("_")[0] for job in through_sbatch.values()}, key=int)
    states = subprocess.run(["squeue", "--states=all", "--noheader", "--format=%i %T", "--jobs", ",".join(slurm_ids)],
                            capture_output=True, text=True, check=True).stdout.split("\n")
    assert {line.split()[1] for line in states if line} == {"COMPLETED"}

    ours, local = tmp_path / "out", demo_run / "out"
    for dataset in ("demo_unlabelled", "demo_labelled"):
        for sub in ("shards", "status", "plan"):
            files = sorted(p.name for p in (local / dataset / sub).iterdir())
            assert files and files == sorted(p.name for p in (ours / dataset / sub).iterdir())
            for name in files:
                assert (ours / dataset / sub / name).read_bytes() == (local / dataset / sub / name).read_bytes(), name
        assert (ours / dataset / "clips.tsv").read_text() == (local / dataset / "clips.tsv").read_text()
    # The chained pretraining (epoch 1, then a job resuming for epoch 2) ends in the same weights.
    pretrain = "pretrain/demo_unlabelled/full"
    assert (ours / pretrain / "until-epoch1.json").exists()
    assert (ours / pretrain / "final.json").read_text() == (local / pretrain / "final.json").read_text()
    state = json.loads((local / pretrain / "final.json").read_text())["state"]
    # (Tensors and metadata, not bytes: safetensors writes its metadata keys in hash order.)
    weights = [load_file(run / pretrain / state / "model.safetensors") for run in (ours, local)]
    assert weights[0].keys() == weights[1].keys() and all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert read_configs(ours / pretrain / state) == read_configs(local / pretrain / state)
    for name in ("metrics.json", "predictions.csv"):
        assert (ours / finetune.removeprefix("out/") / name).read_text() == \
            (local / finetune.removeprefix("out/") / name).read_text()


# A VoxCeleb2-sized plan: 1,128,246 clips in 1,129 shards of 1,000, and MOSI's 2,199 clips in 3.
PAPER_SHARDS = {"voxceleb2": 1129, "mosi": 3}
RENDER_CONFIG = """
results: out
datasets:
  voxceleb2: {layout: voxceleb2, root: VoxCeleb2, subsets: [dev, test]}
  mosi: {layout: mmsa_raw, root: MOSI, pretrained_on: voxceleb2}
asr: {device: cuda}
pretrain: {device: cuda}
finetune: {device: cuda}
"""


def test_sbatch_requests_of_a_voxceleb2_plan(tmp_path):
    """Every sbatch call the plugin makes (tests/render_sbatch.py) for features of VoxCeleb2 and
    MOSI, the pretraining chain and 5 fine-tuning seeds, on GPUs; nothing is submitted."""
    python = submit_python()
    (tmp_path / "config.yaml").write_text(RENDER_CONFIG)
    for folder in ("VoxCeleb2/dev/mp4", "VoxCeleb2/test/mp4", "MOSI"):  # the corpora's folders (no media needed)
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "MOSI" / "label.csv").write_text("video_id,clip_id,text,label,mode\n")
    header = "clip_id\tvideo\taudio\ttext\tlabel\tsplit\tspeaker\tshard\n"
    for dataset, shards in PAPER_SHARDS.items():
        plan = tmp_path / "out" / dataset / "plan"
        plan.mkdir(parents=True)
        for k in range(shards):  # the plan checkpoint's output: one TSV per shard
            (plan / f"{k:05d}.tsv").write_text(header + f"c{k}\tv.mp4\t\t\t\ttrain\ts{k}\t{k:05d}\n")
    result = subprocess.run(
        [str(python), str(REPO / "tests" / "render_sbatch.py"), "-s", str(REPO / "Snakefile"), "--profile", str(PROFILE),
         "--default-resources", "slurm_partition=cpu", "slurm_account=kebr",
         "--set-resources", *[f"{rule}:slurm_partition=gpu" for rule in GPU_RULES], "--", "finetune_mosi"],
        cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    requests = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    by_rule: dict[str, list[dict]] = {}
    for r in requests:
        by_rule.setdefault(r["rule"], []).append(r)
    shards = sum(PAPER_SHARDS.values())
    # The per-shard rules as job arrays of at most 1,000 tasks: 2 sbatch calls each, not 1,132.
    per_shard = ("asr", "audio_features", "visual_features", "assemble_shard")
    assert {rule: len(rs) for rule, rs in by_rule.items()} == {
        **dict.fromkeys(per_shard, 2), "clips_report": 2, "pretrain_part": 2, "pretrain": 1, "finetune": 5}
    for rule in per_shard:
        arrays = sorted(tuple(map(int, re.search(r"--array=(\d+)-(\d+)", r["sbatch"]).groups())) for r in by_rule[rule])
        # Where the plugin cuts the 1,132 tasks may vary (asr's asr_gpu_slots resource moves it by one):
        # two arrays of at most 1,000 that together cover every task once.
        assert arrays[0][0] == 1 and arrays[1] == (arrays[0][1] + 1, shards), (rule, arrays)
        assert all(b - a + 1 <= 1000 for a, b in arrays) and len(by_rule[rule][0]["jobs"]) == shards, (rule, arrays)
    cap = 1440
    for r in requests:
        call = r["sbatch"]
        assert call.startswith("sbatch ") and " -A kebr " in call
        minutes, mem, cpus = (int(re.search(p, call).group(1))
                              for p in (r" -t '?(\d+)", r" --mem (\d+)", r"--cpus-per-task=(\d+)"))
        assert 0 < minutes <= cap and mem >= 3000 and cpus >= 1
        gpu = r["rule"] in GPU_RULES
        assert (" -p gpu " in call) == gpu and (" -p cpu " in call) != gpu
        assert ("--gpus=1" in call) == gpu, call
    assert " -t 480 " in by_rule["visual_features"][0]["sbatch"] and " --mem 16000 " in by_rule["finetune"][0]["sbatch"]
    # 3 days of pretraining under a 24 h cap: 3 jobs of 24 h, stopping after epochs 67, 134 and 200.
    assert sorted(r["jobs"][0] for r in by_rule["pretrain_part"]) == [
        "pretrain_part dataset=voxceleb2 pvariant=full epoch=134", "pretrain_part dataset=voxceleb2 pvariant=full epoch=67"]
    assert all(" -t 1440 " in r["sbatch"] for r in by_rule["pretrain_part"] + by_rule["pretrain"])


def test_resources_scale_with_attempt_under_the_cap():
    from types import SimpleNamespace

    from kebr.config import validate_config
    from kebr.resources import gpus, mem_mb, placeholders, pretrain_chain, pretrain_runtime, runtime

    config = validate_config({"datasets": {"vox": {"layout": "voxceleb2", "root": "/v"},
                                           "tiny": {"layout": "voxceleb2", "root": "/t", "pretrain": {"epochs": 2},
                                                    "resources": {"runtime": {"pretrain": 30}}}},
                              "pretrain": {"device": "cuda"}})
    vox = SimpleNamespace(dataset="vox", pvariant="full", get=lambda key: "vox" if key == "dataset" else None)
    assert pretrain_chain(config, "vox", "full") == [67, 134, 200]  # 4,320 min under a 1,440 min cap
    assert pretrain_chain(config, "tiny", "full") == [2]
    assert [pretrain_runtime(config)(vox, attempt) for attempt in (1, 2)] == [1440, 1440]
    assert [runtime(config, "visual_features")(vox, attempt) for attempt in (1, 2, 3, 4)] == [480, 960, 1440, 1440]
    assert [mem_mb(config, "asr")(vox, attempt) for attempt in (1, 2)] == [3000, 6000]
    assert gpus(config, "pretrain")(vox) == 1 and gpus(config, "asr")(vox) == 0  # asr.device auto asks for none
    assert placeholders({"slurm_partition": "<partition>", "slurm_account": "'<account>'", "mem_mb": 10,
                         "x": "gpu"}) == ["slurm_account", "slurm_partition"]
