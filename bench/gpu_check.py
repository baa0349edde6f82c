"""The checks of bench/gpu_check.sh, one per call; each prints one JSON line (see that script).

    python bench/gpu_check.py loader|steps|compile|ddp --work DIR [--dry-run] [--tokenizer DIR]

Each check runs the code a real run takes:
- ``loader``: a VoxCeleb2-shaped corpus of 100 shards (bench/loader.py: real masked text, widths
  400 x 33, 55 x 94, 39 tokens) pretrained for one epoch by ``kebr.train.pretrain`` itself: LM-cache
  sidecars built on the GPU, the real loader (``make_loader``: groups, persistent workers, pinned
  memory), bf16 TCMF steps; samples/s, the sidecar build, and GPU utilisation sampled with nvidia-smi.
  Then the same steps fed by the loader against the same batches already on the host:
  ``steps_vs_in_memory`` (the loader is never the limit when it is ~1).
- ``steps``: training steps at the LM sizes a run may use, built from their configs with random
  weights (no download): MiniLM, BERT-base and BERT-large shaped; bf16 (the config's default) and
  fp32 (the paper recipe: ``amp: false``); pretraining (frozen LM) and fine-tuning (LM trained);
  samples/s and MFU. ``paper_recipe_step`` is BERT-large, fp32, fine-tuning.
- ``compile``: the ``loader`` pretraining eager and compiled (``compile: true``; ``reduce-overhead``,
  with CUDA graphs), in bf16 and fp32: a later epoch's samples/s per variant, compile seconds (the
  first epoch's extra time), and how many graphs Dynamo compiled: trimmed text takes a few fixed
  lengths (kebr/train/data.py), so that number stays small.
- ``ddp``: run under ``torchrun --nproc_per_node=<GPUs>``: the ``loader`` pretraining with the process
  group (NCCL) and DistributedDataParallel on every GPU present.
The ASR check is bench/asr.py's own (bench/gpu_check.sh calls it).

The LMs: the bundled MiniLM package when it is installed, else (a machine without it, such as a
borrowed GPU box that cannot install packages) an LM of the same shape with random weights and the
tokenizer files from ``--tokenizer``; the JSON says which. ``--dry-run`` runs the same code at tiny
size on the CPU (gloo; torch.compile with the "eager" backend: Dynamo captures the graphs but
generates no code, which on a CPU would compile C++ for minutes), so the tests can run the script
without a GPU. Without a GPU and without ``--dry-run`` a check prints why it did not run.
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import os
import shutil
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import asr as bench_asr  # noqa: E402  bench/asr.py (its nvidia-smi sampler)
import loader as bench_loader  # noqa: E402  bench/loader.py
import train as bench_train  # noqa: E402  bench/train.py

from kebr.model import KEBRConfig  # noqa: E402


def emit(check: str, **fields: Any) -> None:
    print(json.dumps({"check": check, **fields}), flush=True)


def needs_gpu(dry_run: bool) -> str | None:
    """Why a GPU check cannot run here (None: it can)."""
    if dry_run:
        return None
    if not torch.cuda.is_available():
        return "no CUDA device visible (run with --dry-run on a CPU)"
    return None


def text_model(work: Path, tokenizer: Path | None, shape: str = "minilm") -> tuple[str, str]:
    """(LM path, what it is): the bundled MiniLM for "minilm" unless ``tokenizer`` is given (the package
    is not installed), else an LM of ``shape`` with random weights and the tokenizer files of
    ``tokenizer`` (default: the bundled MiniLM's) (bench/train.py ``bert_shaped``)."""
    if shape == "minilm" and tokenizer is None:
        return "bundled", "the bundled all-MiniLM-L6-v2"
    folder = work / f"{shape}-shaped"
    if not folder.exists():
        bench_train.bert_shaped(folder, shape, tokenizer)
    return str(folder), f"{shape}-shaped, random weights (built from its config)"


def corpus(work: Path, dry_run: bool, tokenizer: Path | None) -> tuple[list[Path], str, str]:
    """The loader corpus (written once per work dir): 100 shards of 320 clips (2.4 GB of frames: more
    than ``pretrain`` holds in RAM, so it reads the files), 4 x 8 on a dry run."""
    lm, what = text_model(work, tokenizer)
    folder = work / "corpus"
    if not folder.exists():  # written aside and renamed: DDP ranks may race to write it
        shards, rows = (4, 8) if dry_run else (100, 320)
        aside = work / f".corpus-{os.getpid()}"
        bench_loader.write_corpus(aside, shards, rows, "contiguous", text_model=lm)
        shutil.rmtree(aside / "lm_cache")  # pretrain() builds its own, on the GPU
        try:
            aside.rename(folder)
        except OSError:  # another rank's is there
            shutil.rmtree(aside)
    return sorted(folder.glob("0*.h5")), lm, what


def pretrain_run(work: Path, name: str, dry_run: bool, tokenizer: Path | None, epochs: int = 1,
                 max_steps_per_epoch: int | None = None, **changes: Any) -> tuple[Path, list[dict[str, str]], float]:
    """``kebr.train.pretrain`` on the corpus, bf16 unless ``changes`` (settings) say otherwise; returns
    (run dir, log.csv rows, wall seconds)."""
    from kebr.train.pretrain import pretrain
    from kebr.train.settings import PretrainSettings

    shards, lm, _ = corpus(work, dry_run, tokenizer)
    run = work / name
    config = KEBRConfig(d_audio=bench_loader.D_A, d_video=bench_loader.D_V, text_model=lm, freeze_text=True)
    settings = PretrainSettings(epochs=epochs, batch_size=4 if dry_run else 32, device="cpu" if dry_run else "cuda",
                                num_workers=1 if dry_run else 6, save_epochs=(), log_every_steps=0,
                                **{"amp": True, **changes})
    started = time.perf_counter()
    pretrain(shards, run, model_config=config, settings=settings, seed=0, max_steps_per_epoch=max_steps_per_epoch,
             lm_cache_dir=work / f"lm_cache-{name}")
    seconds = time.perf_counter() - started
    with (run / "log.csv").open() as fh:
        return run, list(csv.DictReader(fh)), seconds


def check_loader(dry_run: bool, work: Path, tokenizer: Path | None) -> dict[str, Any]:
    from kebr.shards import ShardDataset
    from kebr.train.data import make_loader
    from kebr.train.lm_cache import attach_lm_cache
    from kebr.model import KEBR
    from kebr.train.loop import Runtime

    shards, lm, what = corpus(work, dry_run, tokenizer)
    with bench_asr.GpuSampler() as utilisation:
        run, log, seconds = pretrain_run(work, "loader", dry_run, tokenizer)
    epoch_s = float(log[-1]["seconds"])
    result: dict[str, Any] = {
        "ok": True, "device": "cpu" if dry_run else torch.cuda.get_device_name(), "text_model": what,
        "shards": len(shards), "clips": len(ShardDataset(shards, stage="pretrain")), "batch_size": 4 if dry_run else 32,
        "pretrain_samples_per_s": float(log[-1]["samples_per_s"]), "epoch_s": epoch_s,
        "sidecar_build_and_setup_s": round(seconds - epoch_s, 1), **utilisation.summary()}
    # The same steps fed by the loader and from the host: is the loader ever the limit?
    device = torch.device("cpu" if dry_run else "cuda")
    runtime = Runtime(device, rank=0, world_size=1, amp=not dry_run)
    sidecars = sorted((work / "lm_cache-loader").glob("*.h5"))
    dataset = attach_lm_cache(ShardDataset(shards, stage="pretrain"), sidecars)
    model = KEBR(KEBRConfig(d_audio=bench_loader.D_A, d_video=bench_loader.D_V, text_model=lm,
                            freeze_text=True)).to(device)
    model.finetune_head.requires_grad_(False)
    generator = torch.Generator().manual_seed(0)
    loader = make_loader(dataset, 4 if dry_run else 32, runtime, shuffle=True, num_workers=1 if dry_run else 6,
                         generator=generator, bucket_by_length=True)
    result.update(bench_loader.loader_vs_memory(model, loader, generator, runtime, 4 if dry_run else 300))
    return result


def check_steps(dry_run: bool, work: Path, tokenizer: Path | None) -> dict[str, Any]:
    device = torch.device("cpu" if dry_run else "cuda")
    batch, steps = (2, 1) if dry_run else (32, 10)
    shapes = ("minilm",) if dry_run else ("minilm", "base", "large")
    result: dict[str, Any] = {"ok": True, "device": "cpu" if dry_run else torch.cuda.get_device_name(),
                              "batch_size": batch, "text_length": bench_train.L}
    for shape in shapes:
        lm, result[f"{shape}_text_model"] = text_model(work, tokenizer, shape)
        for precision, amp in (("bf16", True), ("fp32", False)):
            if dry_run and amp:
                continue
            for stage in ("pretrain", "finetune"):
                result[f"{shape}_{precision}_{stage}"] = bench_train.step_throughput(
                    lm, stage, batch, steps, device, d_video=bench_loader.D_V, amp=amp)
    shape = shapes[-1]
    result["paper_recipe_step"] = {"what": f"{shape}-shaped LM, fp32, fine-tuning (the paper recipe's precision; "
                                           "its LM is BERT-large)", **result[f"{shape}_fp32_finetune"]}
    return result


def check_compile(dry_run: bool, work: Path, tokenizer: Path | None) -> dict[str, Any]:
    """The ``loader`` pretraining eager and compiled, in bf16 (the config's default) and fp32: a later
    epoch's samples/s per variant, compile seconds (the first epoch's extra time) and Dynamo's graphs."""
    import torch._dynamo

    if dry_run:
        torch.compile = functools.partial(torch.compile, backend="eager")
    steps = None if dry_run else 250  # per epoch: enough to meet every trimmed text length
    variants = {"eager": {"compile": False}, "compiled": {"compile": True}}
    if not dry_run:  # CUDA graphs and bf16 are CUDA's
        variants = {"eager_bf16": {"compile": False}, "eager_fp32": {"compile": False, "amp": False},
                    "compiled_bf16": {"compile": True}, "cudagraphs_bf16": {"compile": "reduce-overhead"},
                    "cudagraphs_fp32": {"compile": "reduce-overhead", "amp": False}}
    result: dict[str, Any] = {"ok": True}
    for name, overrides in variants.items():
        torch._dynamo.reset()
        torch._dynamo.utils.counters.clear()
        _, log, _ = pretrain_run(work, name, dry_run, tokenizer, epochs=2, max_steps_per_epoch=steps, **overrides)
        result[name] = {"samples_per_s": float(log[-1]["samples_per_s"]), "first_epoch_s": float(log[0]["seconds"]),
                        "epoch_s": float(log[-1]["seconds"]), "loss": float(log[-1]["loss"]),
                        "graphs_compiled": int(torch._dynamo.utils.counters["stats"]["unique_graphs"])}
    eager, compiled = (("eager", "compiled") if dry_run else ("eager_bf16", "compiled_bf16"))
    result.update({"compile_s": round(result[compiled]["first_epoch_s"] - result[eager]["first_epoch_s"], 1),
                   "eager_samples_per_s": result[eager]["samples_per_s"],
                   "compiled_samples_per_s": result[compiled]["samples_per_s"],
                   "graphs_compiled": result[compiled]["graphs_compiled"],
                   "loss_eager": result[eager]["loss"], "loss_compiled": result[compiled]["loss"]})
    best = max((v["samples_per_s"], k) for k, v in result.items() if isinstance(v, dict))
    result["best"] = {"variant": best[1], "samples_per_s": best[0]}
    return result


def check_ddp(dry_run: bool, work: Path, tokenizer: Path | None) -> dict[str, Any]:
    import torch.distributed as dist

    if "LOCAL_RANK" not in os.environ:
        return {"ok": False, "error": "not started by torchrun (bench/gpu_check.sh starts it so)"}
    _, log, _ = pretrain_run(work, "ddp", dry_run, tokenizer)
    return {"ok": dist.is_initialized(), "backend": dist.get_backend(), "world_size": dist.get_world_size(),
            "epochs": len(log), "samples_per_s": float(log[-1]["samples_per_s"]),
            "final_loss": float(log[-1]["loss"])}


CHECKS: dict[str, Callable[[bool, Path, Path | None], dict[str, Any]]] = {
    "loader": check_loader, "steps": check_steps, "compile": check_compile, "ddp": check_ddp}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("check", choices=sorted(CHECKS))
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--tokenizer", type=Path, default=None,
                        help="tokenizer files for LMs of random weights, where the bundled MiniLM is not installed")
    args = parser.parse_args()
    name = f"{args.check}{'_dry_run' if args.dry_run else ''}"
    if os.environ.get("RANK", "0") != "0":  # under torchrun only rank 0 reports
        CHECKS[args.check](args.dry_run, args.work, args.tokenizer)
        return
    reason = needs_gpu(args.dry_run)
    if reason:
        emit(name, ok=False, skipped=reason)
        return
    args.work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    try:
        result = CHECKS[args.check](args.dry_run, args.work, args.tokenizer)
    except Exception as exc:
        traceback.print_exc()
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:500]}
    emit(name, **result, seconds=round(time.perf_counter() - started, 1))


if __name__ == "__main__":
    main()
