"""VoxCeleb2 on one node: `snakemake --cores 32 pretrain_voxceleb2` projected from measured rates.

    python bench/voxceleb2.py --cores 32 --gpus 1 [--results bench/results] [--us-per-op 34] [--every-clip]
    python bench/voxceleb2.py --measure [--work DIR]   # re-measures the constants marked "--measure" (minutes)

Reads the benches' JSON in ``--results`` (loader.json, visual.json, asr.json, asr_gpu.json, gpu_check.json,
dag.json; any may be missing), the config schema's defaults (kebr/schemas/config.schema.yaml through
``kebr.config.validate_config``), each rule's ``threads`` (rules/*.smk) and the local profile's memory
(profiles/local/config.yaml); prints a table, then one JSON line, also written to ``<results>/voxceleb2.json``.
Reads no media and imports no torch: it runs in about a second.

Stages, per clip (N = 1,128,246 clips, mean duration from the VoxCeleb2 hours of docs/DATA.md,
else 7.8 s):
- plan: `kebr plan` + Snakemake's DAG after the checkpoint, one process (bench/dag.py's seconds).
- asr (ASR + language ID), audio, visual, assemble (English filter, masking, shard writing): CPU
  stages, costed in CPU-seconds per clip measured on this machine (process CPU time, all threads).
  ASR costs per clip (Whisper pads every clip to a 30 s window) or per media second, whichever is
  larger; audio and visual per media second; assemble per clip. Each shard job also pays its worker's
  start (models loaded, numba warmed) once. With a GPU ASR rate measured (gpu_check.json's ``asr``
  check or asr_gpu.json) ASR runs on the GPU instead, holding the cores of its jobs; without one,
  ASR is costed on the CPU (``asr.device: auto`` would put it on the GPU, which is not credited).
- lm_cache: the pretrain job builds the fp16 MiniLM sidecars on the GPU before epoch 1 (one process).
- pretrain: 200 epochs over VoxCeleb2's English clips as the paper counts them (947K, from docs/DATA.md;
  ``--every-clip``: all 1,128,246, an upper bound; the JSON gives both totals), batch 32, the LM cache,
  ``num_workers`` loader processes. Every clip is still transcribed and featurised: the English
  filter needs the transcript.

Schedule (the model this projection uses):
1. plan runs alone (a checkpoint: nothing else is known until it ends).
2. features: every asr/audio/visual job is ready once the plan exists and Snakemake keeps the cores
   full, so the CPU stages share the cores as one pool: wall = max(sum of CPU work / cores
   available, sum of job memory x job time / the local profile's mem_mb, GPU work of the phase) +
   pipeline fill (the last shard's longest media job and its assemble job, which cannot overlap
   anything). Per-stage ``hours`` are the stage alone on the
   node; the phase's wall is not their sum.
3. pretrain: its input is clips.tsv, which needs every shard, so nothing overlaps it: the LM-cache
   build, then the epochs, one after the other on the GPU. Measured (gpu_check.json): the steady-state
   samples/s (a later epoch of the real pretrain() through the loader and LM cache) of the step the
   config runs (``pretrain.compile: auto``: CUDA graphs over the whole loss step on one GPU, eager
   under DDP; ``amp``: fp32 by default, bf16 when on), from the latest check line that ran it; else the eager rate; else the
   loader check's 1-epoch rate. Estimated (no gpu_check.json): the lowest of the loader's supply
   (rows/s per loader process x num_workers), the GPU's FLOP rate at an assumed MFU and the host's
   eager launch rate (aten ops per step x an assumed time per op): a batch of 32 through a
   1M-parameter TCMF is far too small to fill an H100, so by this estimate the launches set the pace
   (CUDA graphs would remove most of them: for that step the estimate is an upper bound on time).
total = plan + features + lm_cache + pretrain; the critical path names the stages that set each term.
clips_report (reads 1,129 status tables, seconds) and fine-tuning (not part of pretrain_voxceleb2)
are left out.

MEASURED: the rate comes from this machine's bench JSON, or from a constant below that names the run
that measured it (``--measure`` re-runs those). ESTIMATE: a GPU rate without gpu_check.json (built from
counted ops and FLOPs and the stated assumptions), or a stage whose bench JSON is missing (an older
documented measurement stands in). Nothing raises for a missing or unreadable file.

CPU rates scale per core: 32 cores are taken to be as fast as one of this machine's (a shared
machine, so its CPU-seconds are if anything high). A GPU rate measured on the H200 stands for the
H100 (same dense bf16 peak; the H200's HBM is faster, so memory-bound work may run slower on an H100).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
# The data spec with VoxCeleb2's hours and clips: the repository's copy, else the shared spec's.
DATA_SPECS = (REPO / "docs" / "DATA.md",)

# VoxCeleb2 dev + test as distributed (issue 13; bench/dag.py plans the same count).
VOXCELEB2_CLIPS = 1_128_246
# Used when DATA.md's hours cannot be read.
FALLBACK_CLIP_S = 7.8
# The clips that reach pretraining: VoxCeleb2's English clips, 947K in the paper (4.2: "VoxCeleb2 (947K)";
# docs/DATA.md "the paper keeps 947K English clips"). Used when DATA.md's count cannot be read. Every clip
# is transcribed and featurised (the English filter needs the transcript); only these are trained on.
FALLBACK_ENGLISH_CLIPS = 947_000
# Issue 13's target for `snakemake --cores 32 pretrain_voxceleb2` on one H100.
TARGET_HOURS = 12.0
# H100 SXM dense bf16 peak, FLOP/s (bench/train.py PEAK_BF16, NVIDIA's datasheet).
PEAK_BF16 = 989e12

# ---- documented constants: measured on this machine where no bench writes the rate to JSON ----------
# docs/scale.md "Planning at scale" (python bench/dag.py, 2 cores): `kebr plan` of a 1,128,246-clip manifest
# 45 s, `snakemake -n pretrain_voxceleb2` after it 14 s. <results>/dag.json (bench/dag.py's JSON:
# plan_s, dry_run_s, clips) replaces them.
PLAN_S, DAG_S, PLAN_CLIPS = 45.0, 14.0, 1_128_246
# `python bench/voxceleb2.py --measure` on 2026-12-05, this machine (2 cores, load 1 to 3): the audio
# stage's work (kebr.stages.AudioWork, librosa33, probe + decode + features) over the 63 demo clips
# (188.1 media s) after a warm-up: 3.038 CPU-s while it built the chroma filter banks of the clips'
# 44 tunings (308 banks), 1.585 CPU-s once they existed, the steady state of a job (kebr/features/audio.py
# memoises them). The same clips without the memo: 3.48 CPU-s (a job paid that on every clip). --measure
# runs all three in one process (librosa's own builder first): a second run gave 3.483 / 3.099 / 1.566,
# audio_memo_speedup_warm 2.22.
# On 2026-12-04 at a load of ~5: 5.35 to 6.75 CPU-s without the memo.
AUDIO_CPU_S_PER_MEDIA_S = 1.585 / 188.1
AUDIO_BANK_BUILD_S = (3.038 - 1.585) / 308
# A job builds at most one bank per tuning (librosa estimates it to 0.01 of a bin: 100 values) and octave (7).
AUDIO_BANKS_PER_JOB = 100 * 7
# `python bench/voxceleb2.py --measure` (same day and machine): the visual stage's work (VisualWork, MediaPipe
# at 6 fps) over the same clips: 7.14 and 6.97 CPU-s. Used only while visual.json (bench/visual.py) is missing.
VISUAL_CPU_S_PER_MEDIA_S = 7.144 / 188.1
# Same run: `kebr.stages.assemble.run_assemble` of the 63 demo clips as one shard: 2.47 CPU-s the first time in a
# process (imports, tokenizer), 0.142 the second: per clip the warm cost, per shard job the difference.
# (--measure runs it after the other stages have imported what it needs, so there both runs are warm.)
ASSEMBLE_CPU_S_PER_CLIP = 0.142 / 63
ASSEMBLE_JOB_S = 2.469 - 0.142
# docs/scale.md "What the robustness costs" (python bench/stage_outputs.py): a spawned worker's start with its
# models loaded, per shard job, wall seconds at a load of ~11 (so an upper bound on its CPU-seconds).
WORKER_START_S = {"asr": 3.7, "audio": 12.3, "visual": 6.3}
# The README's "What each stage does" before commit e4b3212 (python bench/langid.py, eSpeak NG clips): CPU-s
# per clip of tiny.en (1.1) and of the language ID (1.3); the section, now docs/corpora.md, quotes later
# runs. Used only while asr.json is missing.
ASR_README_CPU_S_PER_CLIP = 1.1 + 1.3
# `python bench/voxceleb2.py --measure`: one cached pretraining step (kebr.train.loop.train_epoch, batch
# 32, 39-token MiniLM states from a sidecar, bf16 autocast, fused Adam) dispatches 618 aten ops that
# are not views (each a kernel launch on a GPU), and FlopCounterMode counts 2.83e10 FLOPs in it.
STEP_OPS, STEP_FLOPS, STEP_BATCH = 618, 2.832e10, 32
# Same: the frozen MiniLM's forward over one LM-cache build batch (kebr/train/lm_cache.py BUILD_BATCH,
# 128 clips of 39 tokens, bf16): 178-179 aten ops, 1.06e11 FLOPs. Hidden width 384 (all-MiniLM-L6-v2).
LM_BATCH_OPS, LM_BATCH_FLOPS, LM_BUILD_BATCH, LM_HIDDEN = 179, 1.060e11, 128, 384

# ---- assumptions (estimates only; every one is printed with the result) -----------------------------
# Host time per launched op in eager PyTorch (dispatch + autograd + cudaLaunchKernel), --us-per-op changes
# it. A bare op costs ~5 us and 10 us was the first guess; the H200 check of 2026-12-04 (gpu_check.json
# loader: in_memory_steps_per_s 48.1, batches already on the host, GPU 11% busy) implies 1 / 48.1 / 618
# = 34 us per op on that machine, so the estimate now uses that. The JSON reports the implied figure of
# every gpu_check.json it reads ("us_per_op_implied_by_gpu_check").
US_PER_OP = 34.0
# Model FLOP utilisation of the small matmuls when FLOPs, not launches, bound a step.
ASSUMED_MFU = 0.3


@dataclass
class Stage:
    """One stage of the projection: its cost per clip and where that number comes from."""

    name: str
    kind: str  # "serial" (one process, wall s), "cpu" (CPU-s per clip), "gpu" (GPU-s per clip)
    clips: int  # clips it processes (pretrain: clips x epochs, the samples it trains on)
    cost_per_clip: float  # seconds of the kind's resource per clip (pretrain: per sample)
    unit: str  # the rate as printed
    rate: float
    source: str
    measured: bool
    basis: str
    threads: int = 1
    workers: int = 1
    job_overhead_s: float = 0.0  # per shard job (worker start), resource-seconds
    host_cores: int = 0  # CPU cores a GPU stage holds while it runs
    hours: float = 0.0  # the stage alone on the node
    on_critical_path: bool = False
    notes: list[str] = field(default_factory=list)


# ---- inputs ------------------------------------------------------------------------------------------


def read_json(path: Path) -> dict[str, Any] | None:
    """The last JSON object in ``path`` (benches end with one JSON line), or None when absent/unreadable."""
    try:
        text = path.read_text()
    except OSError:
        return None
    try:
        value = json.loads(text)
        return value if isinstance(value, dict) else None
    except json.JSONDecodeError:
        for line in reversed(text.splitlines()):
            if line.strip().startswith("{"):
                try:
                    return json.loads(line)
                except json.JSONDecodeError:
                    continue
    return None


def gpu_checks(path: Path) -> dict[str, dict[str, Any]]:
    """gpu_check.json's lines by check name (``loader``, ``asr``, ...), the ones that ran (ok not false).
    A check run again is appended as ``<check>_run<k>``: the last line of a check counts, and the earlier
    ones ride along under ``earlier_runs`` so the spread between runs can be shown."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    checks: dict[str, dict[str, Any]] = {}
    for number, line in enumerate(lines):
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(item, dict) and "check" in item and item.get("ok", True) is not False:
            name = re.sub(r"_run\d+$", "", str(item["check"]))
            earlier = checks.pop(name, None)
            runs = [*earlier.pop("earlier_runs", []), earlier] if earlier else []
            checks[name] = {**item, "line": number, "earlier_runs": runs}
    return checks


def failed_gpu_checks(path: Path) -> dict[str, str]:
    """The checks of gpu_check.json that did not run, with why (first 160 characters)."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    failed = {}
    for line in lines:
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(item, dict) and item.get("ok", True) is False:
            failed[str(item.get("check"))] = str(item.get("error", item.get("skipped", "")))[-160:]
    return failed


def voxceleb2_row(spec: Path | None = None) -> tuple[Path, str | None]:
    """The data spec read (``spec`` None: the first of DATA_SPECS that exists) and its VoxCeleb2 table row
    ("" when it has none; None when the file cannot be read)."""
    path = spec or next((p for p in DATA_SPECS if p.exists()), DATA_SPECS[0])
    try:
        text = path.read_text()
    except OSError:
        return path, None
    return path, next((line for line in text.splitlines() if line.startswith("| VoxCeleb2")), "")


def mean_clip_seconds(spec: Path | None = None) -> tuple[float, str]:
    """VoxCeleb2's mean clip duration from a DATA.md table (dev + test hours / clips), else 7.8 s;
    ``spec`` None: the first of DATA_SPECS that exists."""
    path, row = voxceleb2_row(spec)
    if row is None:
        return FALLBACK_CLIP_S, f"{FALLBACK_CLIP_S} s (assumed: {path} not found)"
    parts = re.findall(r"(dev|test) ([\d,]+) / [\d,]+ / ([\d,]+) h", row)
    if not parts:
        return FALLBACK_CLIP_S, f"{FALLBACK_CLIP_S} s (assumed: no VoxCeleb2 hours in {path})"
    clips = sum(int(c.replace(",", "")) for _, c, _ in parts)
    hours = sum(int(h.replace(",", "")) for _, _, h in parts)
    return hours * 3600 / clips, f"{path.name}: VoxCeleb2 {hours:,} h / {clips:,} clips (dev + test)"


def english_clips(spec: Path | None = None) -> tuple[int, str]:
    """VoxCeleb2's English clips as the paper kept them, from DATA.md's VoxCeleb2 row ("the paper keeps
    947K English clips"), else FALLBACK_ENGLISH_CLIPS."""
    path, row = voxceleb2_row(spec)
    found = re.search(r"keeps ([\d,.]+)K English clips", row or "")
    if not found:
        return FALLBACK_ENGLISH_CLIPS, f"{FALLBACK_ENGLISH_CLIPS:,} (paper 4.2; {path.name} gives no count)"
    return round(float(found.group(1).replace(",", "")) * 1000), f"{path.name}: the paper keeps {found.group(1)}K English clips"


def rule_threads(rules: Path = REPO / "rules") -> dict[str, int]:
    """``threads:`` of every rule in rules/*.smk (Snakemake's default: 1)."""
    threads: dict[str, int] = {}
    for smk in sorted(rules.glob("*.smk")):
        rule = None
        for line in smk.read_text().splitlines():
            if m := re.match(r"^(?:rule|checkpoint)\s+(\w+)\s*:", line):
                rule = m.group(1)
                threads.setdefault(rule, 1)
            elif rule and (m := re.match(r"^\s+threads:\s*(\d+)", line)):
                threads[rule] = int(m.group(1))
    return threads


def profile_mem_mb(profile: Path = REPO / "profiles" / "local" / "config.yaml") -> int | None:
    """The memory the local profile lets the jobs use together (``mem_mb=...``), if it says."""
    try:
        m = re.search(r"mem_mb=(\d+)", profile.read_text())
    except OSError:
        return None
    return int(m.group(1)) if m else None


def config_defaults() -> dict[str, Any]:
    """The config with every default filled in from kebr/schemas/config.schema.yaml."""
    sys.path.insert(0, str(REPO))
    from kebr.config import validate_config

    return validate_config({})


# ---- stages ------------------------------------------------------------------------------------------


def cpu_workers(cores: int, threads: int, mem_mb: int, node_mem_mb: int | None) -> int:
    """Concurrent jobs of a rule alone on the node: cores / threads, and no more than memory allows."""
    jobs = max(cores // threads, 1)
    return min(jobs, max(node_mem_mb // mem_mb, 1)) if node_mem_mb else jobs


def plan_stage(results: dict[str, dict | None], clips: int) -> Stage:
    """`kebr plan` and Snakemake's DAG after the checkpoint: one process, wall seconds scaled by clips."""
    dag = results.get("dag")
    if dag and {"plan_s", "clips"} <= dag.keys():
        seconds = (float(dag["plan_s"]) + float(dag.get("dry_run_s", 0.0))) / float(dag["clips"]) * clips
        source = "dag.json: (plan_s + dry_run_s) / clips"
    else:
        seconds = (PLAN_S + DAG_S) / PLAN_CLIPS * clips
        source = "docs/scale.md 'Planning at scale' (bench/dag.py): 45 s plan + 14 s DAG per 1,128,246 clips"
    return Stage("plan", "serial", clips, seconds / clips, "s for the corpus", round(seconds, 1), source, True,
                 "one process, measured on this machine at VoxCeleb2's clip count")


def asr_stage(results: dict[str, dict | None], checks: dict[str, dict], clips: int, clip_s: float,
              threads: int, gpus: int = 1) -> Stage:
    """ASR + language ID: on the GPU at a measured GPU rate, else on the CPU (asr.json, else an old README figure)."""
    gpu = checks.get("asr") or results.get("asr_gpu")
    if gpu and gpu.get("dry_run") is not True and float(gpu.get("clips_per_s", 0)) > 0:
        # Per clip or per media second, whichever is slower for VoxCeleb2's clips (as on the CPU).
        per_clip = 1 / float(gpu["clips_per_s"])
        per_media = clip_s / float(gpu["rtfx"]) if float(gpu.get("rtfx", 0)) > 0 else 0.0
        where = "gpu_check.json check asr" if checks.get("asr") else "asr_gpu.json"
        jobs, job_threads = int(gpu.get("jobs", 1)), int(gpu.get("threads_per_job", threads))
        cost = max(per_clip, per_media) / gpus  # the measured jobs on every GPU (assumed: each as fast)
        return Stage("asr", "gpu", clips, cost, "clips/s (GPU)", 1 / cost,
                     f"{where}: clips_per_s {gpu['clips_per_s']}, rtfx {gpu.get('rtfx')}", True,
                     f"measured on {gpu.get('device', 'the GPU')} through the stage's worker ({jobs} jobs), "
                     "model loading included", threads=job_threads, workers=jobs * gpus,
                     host_cores=jobs * job_threads * gpus)
    asr = results.get("asr")
    if asr and float(asr.get("cpu_s_per_clip", 0)) > 0:
        per_clip = float(asr["cpu_s_per_clip"])
        per_media = float(asr.get("cpu_s_per_media_s", 0)) * clip_s
        cost = max(per_clip, per_media)
        key = "cpu_s_per_clip" if per_clip >= per_media else "cpu_s_per_media_s x clip s"
        bench_s = asr.get("media_s_per_clip")
        note = (f"cpu_s_per_clip {per_clip:g} (clips of {bench_s if bench_s else '?'} s); cpu_s_per_media_s "
                f"{asr.get('cpu_s_per_media_s', '?')} x {clip_s:.2f} s = {per_media:.3g}: the larger is used")
        return Stage("asr", "cpu", clips, cost, "CPU-s/clip", cost, f"asr.json: {key}", True,
                     "stage CPU time on this machine (language ID on); GPU not credited: no GPU ASR rate measured",
                     threads=threads, job_overhead_s=WORKER_START_S["asr"], notes=[note])
    return Stage("asr", "cpu", clips, ASR_README_CPU_S_PER_CLIP, "CPU-s/clip", ASR_README_CPU_S_PER_CLIP,
                 "README 'What each stage does' before e4b3212 (bench/langid.py): tiny.en 1.1 + language ID 1.3 "
                 "CPU-s/clip", False,
                 "asr.json missing: an older measurement on short eSpeak clips, before item 4; GPU not credited",
                 threads=threads, job_overhead_s=WORKER_START_S["asr"])


def feature_stage(name: str, results: dict[str, dict | None], clips: int, clip_s: float, threads: int) -> Stage:
    """audio, visual or assemble: CPU-seconds per clip from visual.json or the documented constants."""
    if name == "visual":
        visual = results.get("visual")
        if visual and float(visual.get("cpu_s_per_media_s", 0)) > 0:
            rate = float(visual["cpu_s_per_media_s"])
            return Stage("visual", "cpu", clips, rate * clip_s, "CPU-s/media s", rate, "visual.json: cpu_s_per_media_s",
                         True, "stage CPU time per media second at 6 fps on this machine (decode included)",
                         threads=threads, job_overhead_s=WORKER_START_S["visual"])
        rate = VISUAL_CPU_S_PER_MEDIA_S
        return Stage("visual", "cpu", clips, rate * clip_s, "CPU-s/media s", rate,
                     "constant VISUAL_CPU_S_PER_MEDIA_S (bench/voxceleb2.py --measure)", False,
                     "visual.json missing: an earlier measurement of the stage's work on the demo clips stands in",
                     threads=threads, job_overhead_s=WORKER_START_S["visual"])
    if name == "audio":
        rate = AUDIO_CPU_S_PER_MEDIA_S
        banks_s = AUDIO_BANKS_PER_JOB * AUDIO_BANK_BUILD_S
        return Stage("audio", "cpu", clips, rate * clip_s, "CPU-s/media s", rate,
                     "constants AUDIO_CPU_S_PER_MEDIA_S, AUDIO_BANK_BUILD_S (bench/voxceleb2.py --measure)", True,
                     "librosa33 stage work on the demo clips once their filter banks exist, CPU time on this machine",
                     threads=threads, job_overhead_s=WORKER_START_S["audio"] + banks_s,
                     notes=[f"per job: worker start {WORKER_START_S['audio']} s + at most {AUDIO_BANKS_PER_JOB} "
                            f"chroma filter banks x {AUDIO_BANK_BUILD_S * 1000:.1f} ms = {banks_s:.1f} s"])
    return Stage("assemble", "cpu", clips, ASSEMBLE_CPU_S_PER_CLIP, "CPU-s/clip", ASSEMBLE_CPU_S_PER_CLIP,
                 "constants ASSEMBLE_CPU_S_PER_CLIP, ASSEMBLE_JOB_S (bench/voxceleb2.py --measure)", True,
                 "English filter + masking + shard write of the demo shard, CPU time on this machine",
                 threads=threads, job_overhead_s=ASSEMBLE_JOB_S)


def disk_bytes_per_s(loader: dict[str, Any] | None) -> tuple[float, str] | None:
    """This machine's measured cold read throughput (a stand-in for the disk's write rate)."""
    if loader and float(loader.get("cold_rows_per_s", 0)) > 0 and float(loader.get("bytes_per_clip", 0)) > 0:
        return (float(loader["cold_rows_per_s"]) * float(loader["bytes_per_clip"]),
                "loader.json: cold_rows_per_s x bytes_per_clip")
    return None


def lm_cache_stage(results: dict[str, dict | None], checks: dict[str, dict], clips: int, text_length: int,
                   us_per_op: float, gpus: int) -> Stage:
    """The LM-cache build at the start of the pretrain job: measured by gpu_check's loader check, else estimated."""
    loader = checks.get("loader")
    if loader and float(loader.get("sidecar_build_and_setup_s", 0)) > 0 and int(loader.get("clips", 0)) > 0:
        # The whole pretrain() setup is charged to the build: an upper bound on it.
        cost = float(loader["sidecar_build_and_setup_s"]) / int(loader["clips"]) / gpus
        return Stage("lm_cache", "gpu", clips, cost, "clips/s (GPU)", 1 / cost,
                     "gpu_check.json check loader: clips / sidecar_build_and_setup_s", True,
                     f"measured on {loader.get('device', 'the GPU')}: build + pretrain setup", workers=gpus,
                     host_cores=1)
    launch = LM_BATCH_OPS * us_per_op * 1e-6 / LM_BUILD_BATCH
    flops = LM_BATCH_FLOPS / LM_BUILD_BATCH / (ASSUMED_MFU * PEAK_BF16)
    disk = disk_bytes_per_s(results.get("loader"))
    sidecar_bytes = text_length * LM_HIDDEN * 2  # float16 states of every token position
    write = sidecar_bytes / disk[0] if disk else 0.0
    cost = (max(launch, flops) + write) / gpus  # build_sidecars splits shards over the ranks
    basis = (f"estimate: MiniLM forward max({LM_BATCH_OPS} ops x {us_per_op:g} us, {LM_BATCH_FLOPS:.3g} FLOPs at "
             f"MFU {ASSUMED_MFU}) per {LM_BUILD_BATCH} clips, then {sidecar_bytes:,} B/clip written at "
             + (f"{disk[0] / 1e6:.1f} MB/s ({disk[1]})" if disk else "no measured disk rate (not counted)"))
    return Stage("lm_cache", "gpu", clips, cost, "clips/s (GPU)", 1 / cost, "constants LM_BATCH_OPS, LM_BATCH_FLOPS"
                 + (" + " + disk[1] if disk else ""), False, basis, workers=gpus, host_cores=1)


def pretrain_stage(results: dict[str, dict | None], checks: dict[str, dict], clips: int, config: dict[str, Any],
                   threads: int, us_per_op: float, gpus: int) -> Stage:
    """The epochs: a GPU rate from gpu_check.json, else the lowest of loader, launch and FLOP bounds."""
    pre = config["pretrain"]
    samples = clips * pre["epochs"]
    loader = checks.get("loader")
    workers = pre["num_workers"]
    notes = []
    own = results.get("loader")
    supply = float(own["rows_per_s_per_process"]) * max(workers, 1) * gpus \
        if own and float(own.get("rows_per_s_per_process", 0)) > 0 else None
    # The step the config runs: pretrain.compile auto is CUDA graphs over the whole loss step on one GPU
    # and eager under DDP (kebr/schemas/config.schema.yaml); amp picks bf16 or fp32.
    mode = pre["compile"]
    if mode == "auto":
        mode = "reduce-overhead" if gpus == 1 else False
    variant = {False: "eager", True: "compiled", "reduce-overhead": "cudagraphs"}[mode] + \
        ("_bf16" if pre["amp"] else "_fp32")
    if loader and float(loader.get("pretrain_samples_per_s", 0)) > 0:
        # The loader check's rate is a 1-epoch run's, one-off starts included (workers, CUDA, compiling);
        # the compile checks run the same pretrain() on the same corpus per variant and report a later
        # epoch: the steady state 200 epochs run at. The latest line that measured the config's variant
        # counts; without one, the eager rate (CUDA graphs only ever ran faster: a lower bound).
        first = float(loader["pretrain_samples_per_s"])
        runs = sorted((r for name, c in checks.items() if name.startswith("compile") for r in [*c["earlier_runs"], c]),
                      key=lambda r: r["line"])
        measured_variant = [r for r in runs if float((r.get(variant) or {}).get("samples_per_s", 0)) > 0]
        eager = [r for r in runs if float(r.get("eager_samples_per_s", 0)) > 0]
        if measured_variant:
            latest = measured_variant[-1]
            rate, key = float(latest[variant]["samples_per_s"]), f"check {latest['check']}: {variant} (a later epoch)"
        elif eager:
            rate, key = float(eager[-1]["eager_samples_per_s"]), f"check {eager[-1]['check']}: eager_samples_per_s"
            if variant.split("_")[0] != "eager":
                notes.append(f"the config's step ({variant}) is not measured: the eager rate stands in (lower bound)")
        else:
            rate, key = first, "check loader: pretrain_samples_per_s"
        notes.append(f"config: pretrain.compile {pre['compile']} on {gpus} GPU -> {variant}")
        notes.append(f"loader check (1 epoch, starts included): {first:,.0f} samples/s, {samples / first / 3600:.1f} h")
        notes += [f"earlier loader ({str(r.get('run', 'no run label')).split(':')[0]}): "
                  f"{float(r['pretrain_samples_per_s']):,.0f} samples/s" for r in loader["earlier_runs"]
                  if float(r.get("pretrain_samples_per_s", 0)) > 0]
        for run in runs:  # every variant of every run, for the spread
            label = str(run.get("run", "no run label")).split(":")[0]
            values = {name: float((run.get(name) or {}).get("samples_per_s", 0))
                      for name in ("eager_bf16", "cudagraphs_bf16", "cudagraphs_fp32")}
            if not any(values.values()):
                values["eager"] = float(run.get("eager_samples_per_s", 0))
            notes += [f"{run['check']} ({label}) {name}: {value:,.0f} samples/s, {samples / value / 3600:.1f} h"
                      for name, value in values.items() if value > 0]
        if loader.get("steps_vs_in_memory") is not None:
            notes.append(f"loader check: steps through the loader / from batches in memory "
                         f"{loader['steps_vs_in_memory']} (1 = the loader is never the limit)")
        utilisation = loader.get("gpu_util_mean_pct", loader.get("gpu_utilisation_mean"))  # key before / after
        if utilisation is not None:
            notes.append(f"GPU utilisation during the loader check: {utilisation}%")
        rate *= gpus  # DDP: one process per GPU, linear (assumed)
        if int(loader.get("batch_size", pre["batch_size"])) != pre["batch_size"]:
            notes.append(f"measured at batch {loader['batch_size']}, the config's is {pre['batch_size']}")
        if supply is not None and supply < rate:  # the check may run more loader workers than the config's
            notes.append(f"capped at the loader's supply with num_workers {workers}: {supply:,.0f} rows/s "
                         f"(loader.json rows_per_s_per_process), below the measured {rate:,.0f}/s")
            rate = supply
        return Stage("pretrain", "gpu", samples, 1 / rate, "samples/s (GPU)", rate, f"gpu_check.json {key}", True,
                     f"measured on {loader.get('device', 'the GPU')}: kebr.train.pretrain through the real loader "
                     f"and LM cache; LM: {loader.get('text_model', '?')}", threads=threads,
                     workers=workers, host_cores=threads, notes=notes)
    bounds: dict[str, float] = {}
    if supply is not None:
        bounds["loader"] = supply
    launch_step = STEP_OPS * us_per_op * 1e-6
    flops_step = STEP_FLOPS / (ASSUMED_MFU * PEAK_BF16)
    bounds["gpu_launch"] = STEP_BATCH / launch_step * gpus
    bounds["gpu_flops"] = STEP_BATCH / flops_step * gpus
    limit = min(bounds, key=bounds.get)
    rate = bounds[limit]
    supplied = f"{bounds['loader']:,.0f}/s" if "loader" in bounds else "not measured"
    basis = (f"estimate: lowest of loader {supplied} (loader.json rows_per_s_per_process"
             f" x num_workers {workers}), launches {bounds['gpu_launch']:,.0f}/s ({STEP_OPS} ops x {us_per_op:g} us"
             f" per step of {STEP_BATCH}), FLOPs {bounds['gpu_flops']:,.0f}/s ({STEP_FLOPS:.3g} per step at MFU "
             f"{ASSUMED_MFU} of {PEAK_BF16 / 1e12:.0f} TFLOP/s); the limit: {limit}")
    if "loader" not in bounds:
        notes.append("loader.json missing: the loader's supply is not checked")
    if own and own.get("steps_vs_in_memory") is not None:
        notes.append(f"loader.json steps_vs_in_memory {own['steps_vs_in_memory']} on CPU (in-process steps; "
                     "on a GPU the loader runs in its own workers)")
    return Stage("pretrain", "gpu", samples, 1 / rate, "samples/s (GPU)", rate,
                 "loader.json rows_per_s_per_process; constants STEP_OPS, STEP_FLOPS", False, basis,
                 threads=threads, workers=workers, host_cores=threads, notes=notes)


# ---- schedule ----------------------------------------------------------------------------------------


def project(results: dict[str, dict | None], checks: dict[str, dict], config: dict[str, Any], threads: dict[str, int],
            cores: int, gpus: int, clips: int = VOXCELEB2_CLIPS, clip_s: float = FALLBACK_CLIP_S,
            us_per_op: float = US_PER_OP, node_mem_mb: int | None = None,
            pretrain_clips: int | None = None) -> dict[str, Any]:
    """The projection as a JSON-ready dict (module docstring: the model). ``pretrain_clips``: the clips the
    LM cache and the epochs run over (None: every clip)."""
    if cores < 1 or gpus < 1:
        raise ValueError("the projection is for a node with at least one core and one GPU")
    trained = clips if pretrain_clips is None else min(pretrain_clips, clips)
    shard = config["shard_size"]
    shards = math.ceil(clips / shard)
    mem = config["resources"]["mem_mb"]
    stages = [plan_stage(results, clips),
              asr_stage(results, checks, clips, clip_s, threads.get("asr", 1), gpus),
              feature_stage("audio", results, clips, clip_s, threads.get("audio_features", 1)),
              feature_stage("visual", results, clips, clip_s, threads.get("visual_features", 1)),
              feature_stage("assemble", results, clips, clip_s, threads.get("assemble_shard", 1)),
              lm_cache_stage(results, checks, trained, config["text"]["max_length"], us_per_op, gpus),
              pretrain_stage(results, checks, trained, config, threads.get("pretrain", 1), us_per_op, gpus)]
    by = {s.name: s for s in stages}
    rules = {"asr": "asr", "audio": "audio_features", "visual": "visual_features", "assemble": "assemble_shard"}

    # Per stage, alone on the node.
    for s in stages:
        if s.kind == "serial":
            s.hours = s.cost_per_clip * s.clips / 3600
        elif s.kind == "cpu":
            s.workers = cpu_workers(cores, s.threads, mem[rules[s.name]], node_mem_mb)
            s.hours = (s.cost_per_clip * s.clips + s.job_overhead_s * shards) / (s.workers * s.threads) / 3600
        else:
            s.hours = s.cost_per_clip * s.clips / 3600  # GPU stages' costs are over all the node's GPUs

    # Features phase: CPU stages pool the cores; a GPU ASR holds its jobs' cores and the GPU.
    features = [by[n] for n in ("asr", "audio", "visual", "assemble")]
    cpu = [s for s in features if s.kind == "cpu"]
    gpu = [s for s in features if s.kind == "gpu"]
    held = sum(s.host_cores for s in gpu)
    free = max(cores - held, 1)
    cpu_work = sum(s.cost_per_clip * s.clips + s.job_overhead_s * shards for s in cpu)
    cpu_s = cpu_work / free
    # Snakemake also packs jobs within the profile's memory: a job holds its rule's mem_mb for as long as
    # it runs (its CPU work over its threads), so the pool can be memory-bound before it is core-bound.
    memory_s = 0.0
    if node_mem_mb:
        mem_free = max(node_mem_mb - sum(s.workers * mem[rules[s.name]] for s in gpu), 1)
        memory_s = sum((s.cost_per_clip * s.clips + s.job_overhead_s * shards) / s.threads * mem[rules[s.name]]
                       for s in cpu) / mem_free
    pool_s = max(cpu_s, memory_s)
    gpu_s = sum(s.cost_per_clip * s.clips for s in gpu)
    media = [s for s in features if s.name != "assemble"]
    # The last shard: its slowest media job (a job's clips one after another on its threads), then assemble.
    # A GPU stage's cost is over all its jobs together: one job runs its workers' times as slow.
    fill_s = max(shard * s.cost_per_clip * (1 / s.threads if s.kind == "cpu" else s.workers) + s.job_overhead_s
                 for s in media)
    fill_s += shard * by["assemble"].cost_per_clip + by["assemble"].job_overhead_s
    features_s = max(pool_s, gpu_s) + fill_s
    features_path = [s.name for s in cpu] if pool_s >= gpu_s else [s.name for s in gpu]
    # What a GPU ASR would have to reach not to be the features' limit (shown while ASR is costed on the CPU).
    asr = by["asr"]
    without_asr_s = None
    if asr.kind == "cpu":
        asr_work = asr.cost_per_clip * clips + asr.job_overhead_s * shards
        without_asr_s = (cpu_work - asr_work) / cores
        if node_mem_mb:
            without_asr_s = max(without_asr_s, memory_s - asr_work / asr.threads * mem["asr"] / node_mem_mb)

    plan_s = by["plan"].hours * 3600
    lm_s, pre_s = by["lm_cache"].hours * 3600, by["pretrain"].hours * 3600
    total_s = plan_s + features_s + lm_s + pre_s
    # asr.device auto puts ASR on the GPU of a GPU node, but no GPU ASR rate is measured: the total if it
    # keeps pace with the CPU stages (then the CPU pool and the fill set the features' wall).
    keeps_pace_s = None
    if without_asr_s is not None:
        keeps_pace_s = plan_s + without_asr_s + fill_s + lm_s + pre_s
    critical = ["plan", *features_path, "lm_cache", "pretrain"]
    for s in stages:
        s.on_critical_path = s.name in critical
    measured = [s.name for s in stages if s.measured]
    # What the GPU check says a launched op costs: its in-memory steps (no loader) are launch-bound.
    steps = float(checks.get("loader", {}).get("in_memory_steps_per_s", 0))
    implied_us = round(1e6 / steps / STEP_OPS, 1) if steps > 0 else None
    # The pretraining rate that would bring the total under the target, the other phases as they are.
    left_s = TARGET_HOURS * 3600 - (plan_s + features_s + lm_s)
    needed = by["pretrain"].clips / left_s if left_s > 0 else None
    return {
        "total_hours": round(total_s / 3600, 2),
        "total_hours_if_gpu_asr_keeps_pace": round(keeps_pace_s / 3600, 2) if keeps_pace_s else None,
        "critical_path": critical,
        "measured_stages": measured,
        "estimated_stages": [s.name for s in stages if not s.measured],
        "target_hours": TARGET_HOURS,
        "meets_target": bool(total_s / 3600 < TARGET_HOURS),
        "cores": cores, "gpus": gpus, "clips": clips, "pretrain_clips": trained, "shards": shards,
        "mean_clip_s": round(clip_s, 3),
        "phases_hours": {"plan": round(plan_s / 3600, 3), "features": round(features_s / 3600, 3),
                         "features_cpu_pool": round(cpu_s / 3600, 3), "features_memory_pool": round(memory_s / 3600, 3),
                         "features_gpu": round(gpu_s / 3600, 3),
                         "features_fill": round(fill_s / 3600, 3), "lm_cache": round(lm_s / 3600, 3),
                         "pretrain": round(pre_s / 3600, 3)},
        "pretrain_samples_per_s_for_target": round(needed, 1) if needed else None,
        "pretrain_samples_per_s_for_target_alone": round(by["pretrain"].clips / (TARGET_HOURS * 3600), 1),
        "features_cpu_work_core_hours": round(cpu_work / 3600, 1), "features_cores_free": free,
        "node_mem_mb": node_mem_mb,
        "features_hours_without_asr_on_cpu": round(without_asr_s / 3600, 3) if without_asr_s is not None else None,
        "asr_gpu_clips_per_s_to_keep_pace": round(clips / without_asr_s, 1) if without_asr_s else None,
        "config": {"epochs": config["pretrain"]["epochs"], "batch_size": config["pretrain"]["batch_size"],
                   "num_workers": config["pretrain"]["num_workers"], "lm_cache": config["pretrain"]["lm_cache"],
                   "text_model": config["text"]["model"], "shard_size": shard, "asr_device": config["asr"]["device"],
                   "language_id_model": config["language"]["id_model"], "visual_fps": config["visual"]["fps"]},
        "assumptions": {"us_per_op": us_per_op, "us_per_op_implied_by_gpu_check": implied_us,
                        "assumed_mfu": ASSUMED_MFU, "peak_bf16_flops": PEAK_BF16,
                        "pretrain_clips": ("every clip: an upper bound (the English filter keeps fewer)"
                                           if trained == clips else
                                           "VoxCeleb2's English clips as the paper counts them (the English "
                                           "filter's own count is known only after ASR)")},
        "stages": {s.name: {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(s).items()
                            if k != "name"} for s in stages},
    }


def projection(results_dir: Path, cores: int, gpus: int, us_per_op: float = US_PER_OP,
               spec: Path | None = None, every_clip: bool = False) -> dict[str, Any]:
    """The projection from the JSON files in ``results_dir`` (each may be missing), the schema's defaults,
    the rules' threads and the local profile's memory. Pretraining runs over the paper's English clips
    (``english_clips``), or ``every_clip``; the JSON gives the other's total too."""
    names = {"loader": "loader.json", "visual": "visual.json", "asr": "asr.json", "asr_gpu": "asr_gpu.json",
             "dag": "dag.json"}
    results = {k: read_json(results_dir / f) for k, f in names.items()}
    checks = gpu_checks(results_dir / "gpu_check.json")
    clip_s, clip_source = mean_clip_seconds(spec)
    english, english_source = english_clips(spec)
    runs = {every: project(results, checks, config_defaults(), rule_threads(), cores, gpus, clip_s=clip_s,
                           us_per_op=us_per_op, node_mem_mb=profile_mem_mb(), pretrain_clips=None if every else english)
            for every in (False, True)}
    result = runs[every_clip]
    result["total_hours_pretraining_every_clip"] = runs[True]["total_hours"]
    result["total_hours_pretraining_english_clips"] = runs[False]["total_hours"]
    result["pretrain_clips_source"] = "every clip" if every_clip else english_source
    result["mean_clip_s_source"] = clip_source
    result["gpu_checks_failed"] = failed_gpu_checks(results_dir / "gpu_check.json")
    result["inputs"] = sorted([names[k] for k, v in results.items() if v] + (["gpu_check.json"] if checks else []))
    result["date"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    result["machine"] = (f"{platform.machine()}, {os.cpu_count()} CPUs (rates measured here); projected node: "
                         f"{cores} cores + {gpus} GPU")
    return result


# ---- output ------------------------------------------------------------------------------------------


def table(result: dict[str, Any]) -> str:
    """The projection as a readable table."""
    lines = [f"VoxCeleb2: {result['clips']:,} clips x {result['mean_clip_s']:.2f} s, {result['shards']:,} shards, "
             f"{result['cores']} cores + {result['gpus']} GPU; pretraining on {result['pretrain_clips']:,} clips "
             f"({result.get('pretrain_clips_source', '?')}), {result['config']['epochs']} epochs, "
             f"batch {result['config']['batch_size']}, LM cache {result['config']['lm_cache']}",
             f"{'stage':<9} {'':<9} {'rate':>22} {'threads x workers':>18} {'hours alone':>12}  source"]
    for name, s in result["stages"].items():
        status = "MEASURED" if s["measured"] else "ESTIMATE"
        rate = f"{s['rate']:,.4g} {s['unit']}"
        mark = "*" if s["on_critical_path"] else " "
        lines.append(f"{name:<9}{mark}{status:<9} {rate:>22} {s['threads']:>8} x {s['workers']:<8} "
                     f"{s['hours']:>12.2f}  {s['source']}")
        if not s["measured"] or s["notes"]:
            lines.append(f"{'':<20}{s['basis']}")
        for note in s["notes"]:
            lines.append(f"{'':<20}note: {note}")
    p = result["phases_hours"]
    lines += [
        "* critical path. Schedule: plan, then the features (CPU stages share the cores; GPU work beside them),",
        "  then the pretrain job (LM-cache build, then the epochs), which needs every shard.",
        f"plan {p['plan']:.2f} h + features {p['features']:.2f} h (max(CPU pool {p['features_cpu_pool']:.2f} h "
        f"on {result['features_cores_free']} cores, memory {p['features_memory_pool']:.2f} h in "
        f"{result['node_mem_mb'] or 0:,} MB, GPU {p['features_gpu']:.2f} h) + fill {p['features_fill']:.2f} h)"
        f" + LM cache {p['lm_cache']:.2f} h + pretraining {p['pretrain']:.2f} h",
        *([f"ASR is costed on the CPU (no GPU ASR rate measured): without it the pool takes "
           f"{result['features_hours_without_asr_on_cpu']:.2f} h, which a GPU ASR of "
           f"{result['asr_gpu_clips_per_s_to_keep_pace']:,.0f} clips/s or more would keep pace with "
           f"(asr.device auto runs it there): total {result['total_hours_if_gpu_asr_keeps_pace']:.2f} h then"]
          if result["asr_gpu_clips_per_s_to_keep_pace"] else []),
        ("pretraining would need " + (f"{result['pretrain_samples_per_s_for_target']:,.0f} samples/s"
                                      if result["pretrain_samples_per_s_for_target"] else "more than the time left")
         + f" (now {result['stages']['pretrain']['rate']:,.0f}) for the total to reach {result['target_hours']:g} h"
         + f"; {result['pretrain_samples_per_s_for_target_alone']:,.0f} to train in {result['target_hours']:g} h"
         + " by itself"),
        *[f"gpu_check.json: check {name} did not run: {why.splitlines()[-1] if why else '?'}"
          for name, why in result.get("gpu_checks_failed", {}).items()],
        *([f"pretraining on every clip instead (an upper bound): total "
           f"{result['total_hours_pretraining_every_clip']:.2f} h"]
          if "total_hours_pretraining_every_clip" in result else []),
        f"total {result['total_hours']:.2f} h against a target of {result['target_hours']:g} h: "
        f"{'met' if result['meets_target'] else 'NOT met'}; critical path {' -> '.join(result['critical_path'])}",
    ]
    return "\n".join(lines)


def measure(work: Path) -> dict[str, Any]:
    """Re-measure the constants this script documents (audio and assemble CPU cost on the demo corpus;
    aten ops and FLOPs of a cached pretraining step and of an LM-cache build batch). Minutes."""
    import time

    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import FlopCounterMode

    sys.path.insert(0, str(REPO / "bench"))
    from features import demo_clips  # bench/features.py
    from train import D_A, D_V, PRETRAIN_MCC, write_bench_shard  # bench/train.py

    from kebr.stages import assemble, supervise, work
    from kebr.model import KEBR, KEBRConfig
    from kebr.shards import ShardDataset
    from kebr.train.data import make_loader
    from kebr.train.lm_cache import BUILD_BATCH, attach_lm_cache, build_sidecars
    from kebr.train.loop import Objective, Runtime, adam, train_epoch

    class Launches(TorchDispatchMode):
        """Counts aten ops that are not views (each a kernel on a GPU)."""

        def __init__(self) -> None:
            super().__init__()
            self.ops = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
            if not func.is_view and str(func.overloadpacket) not in ("aten.view", "aten._unsafe_view", "aten.t",
                                                                     "aten.detach", "aten.alias"):
                self.ops += 1
            return func(*args, **(kwargs or {}))

    out: dict[str, Any] = {}
    config, clips, folder = demo_clips(work)
    audio = work.AudioWork(config)
    audio.process(clips[:2], 0)  # numba compiles on first use: warm it, as a job does once
    # chroma_cqt's filter banks are memoised per tuning (kebr/features/audio.py): the first pass builds
    # the banks of the tunings these clips have, the second is a job's steady state once its banks exist.
    import librosa.core.constantq as constantq

    from kebr.features.audio import memoise_cqt_filters

    memoised = memoise_cqt_filters()
    memo = constantq.__dict__["__vqt_filter_fft"] if memoised else None
    banks = memo.banks if memo is not None else {}
    banks.clear()
    # The baseline in the same process: librosa's own builder (a bank per clip), then the memo cold and warm.
    for run in ("unmemoised", "cold", "warm"):
        if memo is not None:
            setattr(constantq, "__vqt_filter_fft", memo.__wrapped__ if run == "unmemoised" else memo)
        start = time.process_time()
        records = audio.process(clips, 0)
        out[f"audio_{run}"] = {"cpu_s": round(time.process_time() - start, 3), "clips": len(clips),
                               "media_s": round(sum(r["duration_s"] or 0 for r in records), 2),
                               "filter_banks": len(banks)}
    out["audio_memo_speedup_warm"] = round(out["audio_unmemoised"]["cpu_s"] / out["audio_warm"]["cpu_s"], 2)
    visual = work.VisualWork(config)
    visual.process(clips[:2], 0)
    start = time.process_time()
    records = visual.process(clips, 0)
    out["visual"] = {"cpu_s": round(time.process_time() - start, 3), "clips": len(clips),
                     "media_s": round(sum(r["duration_s"] or 0 for r in records), 2)}
    paths = {s: folder / f"{s}.h5" for s in ("asr", "audio", "visual")}
    for name, path in paths.items():
        if not path.exists():
            supervise.run_media_stage(name, config, "demo_unlabelled", clips, path)
    for run in ("first", "second"):
        for p in (folder / "shard.h5", folder / "status.tsv"):
            p.unlink(missing_ok=True)
        start = time.process_time()
        assemble.run_assemble(config, "demo_unlabelled", "00000", clips, paths["asr"], paths["audio"], paths["visual"],
                            folder / "shard.h5", folder / "status.tsv")
        out[f"assemble_{run}_cpu_s"] = round(time.process_time() - start, 3)

    shard = write_bench_shard(work / "step", 64)
    cpu = Runtime(torch.device("cpu"), rank=0, world_size=1, amp=False)
    # bench/train.py's shard: OpenFace's 709 visual columns, wider than MediaPipe's 94 (FLOPs: a bound).
    model = KEBR(KEBRConfig(d_audio=D_A, d_video=D_V, text_model="bundled", freeze_text=True))
    model.finetune_head.requires_grad_(False)
    dataset = ShardDataset([shard], stage="pretrain")
    dataset = attach_lm_cache(dataset, build_sidecars(dataset.paths, model.text, dtype="float16", runtime=cpu))
    amp = Runtime(torch.device("cpu"), rank=0, world_size=1, amp=True)  # bf16 autocast adds its casts
    loader = make_loader(dataset, STEP_BATCH, amp, shuffle=True, num_workers=0,
                         generator=torch.Generator().manual_seed(0), bucket_by_length=True)
    objective, optimizer = Objective("pretrain", PRETRAIN_MCC), adam(model.param_groups(1e-4, 1e-4))
    train_epoch(model, loader, optimizer, objective, amp, max_steps=1)  # Adam's state exists from here on
    batch = next(iter(loader))
    launches, flops = Launches(), FlopCounterMode(display=False)
    with launches:
        train_epoch(model, [batch], optimizer, objective, amp, max_steps=1)
    with flops:
        train_epoch(model, [batch], optimizer, objective, amp, max_steps=1)
    out["step"] = {"ops": launches.ops, "flops": flops.get_total_flops(), "batch": len(batch["audio"])}
    ids = torch.randint(1000, 30000, (BUILD_BATCH, 39))
    encoder = model.text.eval()
    launches, flops = Launches(), FlopCounterMode(display=False)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        with launches:
            encoder(ids, torch.ones_like(ids))
        with flops:
            encoder(ids, torch.ones_like(ids))
    out["lm_build_batch"] = {"ops": launches.ops, "flops": flops.get_total_flops(), "clips": BUILD_BATCH,
                             "hidden": encoder.hidden_size}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cores", type=int, default=32)
    parser.add_argument("--gpus", type=int, default=1)
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of the benches' JSON (read and written)")
    parser.add_argument("--us-per-op", type=float, default=US_PER_OP,
                        help="assumed host microseconds per launched op (GPU estimates only)")
    parser.add_argument("--every-clip", action="store_true",
                        help="pretrain on every clip (an upper bound), not the paper's English clips")
    parser.add_argument("--measure", action="store_true", help="re-measure the documented constants instead")
    parser.add_argument("--work", type=Path, default=None, help="--measure's work folder (default: a temp folder)")
    args = parser.parse_args()
    if args.measure:
        import tempfile

        print(json.dumps(measure(args.work or Path(tempfile.mkdtemp(prefix="kebr-vox2-")))))
        return

    result = projection(args.results, args.cores, args.gpus, args.us_per_op, every_clip=args.every_clip)
    print(table(result))
    line = json.dumps(result)
    print(line)
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "voxceleb2.json").write_text(line + "\n")


if __name__ == "__main__":
    main()
