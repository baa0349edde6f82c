"""The checks of bench/gpu_check.sh, one per call; each prints one JSON line (see that script).

    python bench/gpu_check.py asr|train|ddp|compile --work DIR [--dry-run]

- ``asr``: batched float16 faster-whisper (the bundled tiny.en) on spoken demo sentences (eSpeak NG,
  as the demo corpus speaks them): RTFx (audio seconds per wall second) over the clips, then over one
  60 s recording of them concatenated; word recall against the sentences read, so a fast but broken
  decode cannot pass.
- ``train``: bf16 pretraining and fine-tuning steps with bert-base-uncased if it is in the local
  Hugging Face cache (nothing is downloaded), the bundled MiniLM otherwise: samples/s and MFU on
  39-token batches; then the real training loop on a MOSI-shaped shard: fine-tuning with and without
  length buckets, pretraining with and without the LM cache (bench/train.py).
- ``ddp``: run under ``torchrun --nproc_per_node=1``: a real ``kebr.train.pretrain`` with the process
  group (NCCL) and DistributedDataParallel, as a multi-GPU run uses them.
- ``compile``: the same pretraining with ``torch.compile`` against eager: compile seconds (the first
  epoch's extra time) and samples/s of a later epoch.

``--dry-run`` runs the same code at tiny size on the CPU (int8 ASR, gloo, MiniLM, a few clips; torch.compile
with the "eager" backend: Dynamo captures the model's graphs, as with inductor, but generates no code,
which on a CPU would compile C++ for minutes), so the tests can run the script without a GPU. Without a GPU and without ``--dry-run`` a check prints
why it did not run.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

SAMPLE_RATE = 16_000


def emit(check: str, **fields: Any) -> None:
    print(json.dumps({"check": check, **fields}), flush=True)


def needs_gpu(dry_run: bool) -> str | None:
    """Why a GPU check cannot run here (None: it can)."""
    if dry_run:
        return None
    if not torch.cuda.is_available():
        return "no CUDA device visible (run with --dry-run on a CPU)"
    return None


def spoken_sentences(n: int) -> list[tuple[str, np.ndarray]]:
    """``n`` demo sentences spoken by eSpeak NG at 16 kHz, voices and rates varied."""
    import librosa

    from kebr.democorpus import SENTENCES
    from kebr.tts import ENGLISH_VOICES, synthesize

    out = []
    for i in range(n):
        text = SENTENCES[i % len(SENTENCES)][0]
        speech, rate = synthesize(text, ENGLISH_VOICES[i % len(ENGLISH_VOICES)], rate=150 + 10 * (i % 4))
        out.append((text, librosa.resample(speech, orig_sr=rate, target_sr=SAMPLE_RATE)))
    return out


def word_recall(said: list[str], heard: list[str]) -> float:
    words = lambda s: re.findall(r"[a-z']+", s.lower())  # noqa: E731
    hits = total = 0
    for ref, hyp in zip(said, heard):
        got = set(words(hyp))
        hits += sum(w in got for w in words(ref))
        total += len(words(ref))
    return round(hits / max(total, 1), 3)


def check_asr(dry_run: bool, work: Path) -> dict[str, Any]:
    from kebr.asr import make_transcriber

    device, compute_type = ("cpu", "int8") if dry_run else ("cuda", "float16")
    clips = spoken_sentences(1 if dry_run else 32)
    transcriber = make_transcriber(model="bundled", device=device, compute_type=compute_type,
                                   batch_size=2 if dry_run else 16)
    transcriber.transcribe(clips[0][1])  # warm-up: CUDA context, kernels
    audio = [a for _, a in clips]
    start = time.perf_counter()
    results = transcriber.transcribe_batch(audio)
    seconds = time.perf_counter() - start
    clip_seconds = sum(len(a) for a in audio) / SAMPLE_RATE
    # One long recording: the clips end to end with short pauses, repeated up to the target length.
    target = 5 if dry_run else 60
    gap = np.zeros(int(0.3 * SAMPLE_RATE), dtype=np.float32)
    pieces, said = [], []
    while sum(len(p) for p in pieces) < target * SAMPLE_RATE:
        text, a = clips[len(said) % len(clips)]
        pieces += [a, gap]
        said.append(text)
    long = np.concatenate(pieces)[: target * SAMPLE_RATE]
    start = time.perf_counter()
    long_result = transcriber.transcribe(long)
    long_seconds = time.perf_counter() - start
    return {"ok": True, "device": device, "compute_type": compute_type, "clips": len(clips),
            "clip_audio_s": round(clip_seconds, 1), "rtfx_clips": round(clip_seconds / seconds, 1),
            "word_recall_clips": word_recall([t for t, _ in clips], [r.text for r in results]),
            "long_audio_s": target, "rtfx_long": round(target / long_seconds, 1),
            "word_recall_long": word_recall([" ".join(said)], [long_result.text])}


def local_text_model(dry_run: bool) -> tuple[str, str]:
    """(text model, why) : bert-base-uncased from the local cache if present, else the bundled MiniLM."""
    if dry_run:
        return "bundled", "dry run: the bundled MiniLM"
    from transformers import AutoModel

    try:
        AutoModel.from_pretrained("bert-base-uncased", local_files_only=True)
        return "bert-base-uncased", "found in the local Hugging Face cache"
    except Exception as exc:  # not cached: no download, by design
        return "bundled", f"bert-base-uncased not in the local cache ({type(exc).__name__}): the bundled MiniLM"


def check_train(dry_run: bool, work: Path) -> dict[str, Any]:
    import train as bench_train  # bench/train.py

    from kebr.train.loop import Runtime

    device = torch.device("cpu" if dry_run else "cuda")
    lm, why = local_text_model(dry_run)
    batch, steps = (4, 1) if dry_run else (32, 10)
    result: dict[str, Any] = {"ok": True, "device": "cpu" if dry_run else torch.cuda.get_device_name(),
                              "text_model": lm, "text_model_why": why, "batch_size": batch}
    for stage in ("pretrain", "finetune"):
        result[f"{stage}_step"] = bench_train.step_throughput(lm, stage, batch, steps, device)
    runtime = Runtime(device, rank=0, world_size=1, amp=device.type == "cuda")
    shards = [bench_train.write_bench_shard(work / "train-shards", 8 if dry_run else 1024)]
    warmup = 1 if dry_run else 2
    result["finetune_loop"] = bench_train.bench_finetune(shards, runtime, batch, warmup)
    result["pretrain_loop"] = bench_train.bench_pretrain(shards, runtime, batch, "bundled", warmup)
    return result


def pretrain_run(work: Path, name: str, dry_run: bool, **overrides: Any) -> tuple[Path, list[dict[str, str]]]:
    """A short real pretraining run on a MOSI-shaped shard; returns (run dir, log.csv rows)."""
    import csv

    import train as bench_train  # bench/train.py

    from kebr.model import KEBRConfig
    from kebr.train import pretrain

    shard = work / "run-shards" / "00000.h5"
    if not shard.exists():
        bench_train.write_bench_shard(shard.parent, 8 if dry_run else 2048)
    run = work / name
    pretrain([shard], run, model_config=KEBRConfig(d_audio=bench_train.D_A, d_video=bench_train.D_V,
                                                   freeze_text=True),
             epochs=2, batch_size=4 if dry_run else 64, seed=0, device="cpu" if dry_run else "cuda",
             save_epochs=(), log_every_steps=0, **overrides)
    with (run / "log.csv").open() as fh:
        return run, list(csv.DictReader(fh))


def check_ddp(dry_run: bool, work: Path) -> dict[str, Any]:
    import torch.distributed as dist

    if "LOCAL_RANK" not in os.environ:
        return {"ok": False, "error": "not started by torchrun (bench/gpu_check.sh starts it so)"}
    _, log = pretrain_run(work, "ddp", dry_run)
    return {"ok": dist.is_initialized(), "backend": dist.get_backend(), "world_size": dist.get_world_size(),
            "epochs": len(log), "samples_per_s": float(log[-1]["samples_per_s"]),
            "final_loss": float(log[-1]["loss"])}


def check_compile(dry_run: bool, work: Path) -> dict[str, Any]:
    if dry_run:
        torch.compile = functools.partial(torch.compile, backend="eager")
    _, eager = pretrain_run(work, "eager", dry_run)
    _, compiled = pretrain_run(work, "compiled", dry_run, compile=True)
    return {"ok": True, "compile_s": round(float(compiled[0]["seconds"]) - float(eager[0]["seconds"]), 1),
            "eager_samples_per_s": float(eager[-1]["samples_per_s"]),
            "compiled_samples_per_s": float(compiled[-1]["samples_per_s"]),
            "loss_eager": float(eager[-1]["loss"]), "loss_compiled": float(compiled[-1]["loss"])}


CHECKS: dict[str, Callable[[bool, Path], dict[str, Any]]] = {
    "asr": check_asr, "train": check_train, "ddp": check_ddp, "compile": check_compile}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("check", choices=sorted(CHECKS))
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args()
    name = f"{args.check}{'_dry_run' if args.dry_run else ''}"
    if os.environ.get("RANK", "0") != "0":  # under torchrun only rank 0 reports
        CHECKS[args.check](args.dry_run, args.work)
        return
    reason = needs_gpu(args.dry_run)
    if reason:
        emit(name, ok=False, skipped=reason)
        return
    args.work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    try:
        result = CHECKS[args.check](args.dry_run, args.work)
    except Exception as exc:
        traceback.print_exc()
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:500]}
    emit(name, **result, seconds=round(time.perf_counter() - started, 1))


if __name__ == "__main__":
    main()
