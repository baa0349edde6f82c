"""Training throughput of KEBR, through the real training code (loader, objective, optimizer).

    python bench/train.py [--clips 256] [--batch-size 32] [--device auto] [--shaped base large] [--threads N]

Prints one JSON object with:
- ``finetune``: fine-tuning samples/s on MOSI-shaped text lengths (mean 15 of 39 tokens, random batches
  of 32 reaching ~36) in three ways: ``fixed`` (every batch at 39 tokens: before this change),
  ``random`` (random batches, each trimmed to its longest text) and ``bucketed`` (length buckets, then
  trimmed); ``bucketing_speedup`` = bucketed / random (target >= 1.8).
- ``pretrain``: pretraining samples/s (frozen LM) without and with the LM cache, ``cache_speedup``
  (target >= 5 on CPU), the one-off seconds to build the cache, and the fp16 sidecar's MB per 1,000
  clips; for the bundled MiniLM and for LMs of BERT-base's (default) or BERT-large's shape
  (``--shaped``) with random weights: FLOPs do not depend on the weights, and the real BERTs are not
  bundled. The cache saves the LM's forward pass, so its gain grows with the LM's share of a step.
- ``mcc``: kebr's vectorised MCC (forward + backward) against a faithful re-implementation of the
  reference's per-sample Python loop, on the model's shapes.

Clips are written as a real shard (real sentences of vocabulary words through the bundled tokenizer
and VADER masking; audio and visual features of the reference's sizes, 400 x 33 and 55 x 709, random).
A measurement is one epoch over the clips after two warm-up steps; data loading (HDF5 rows) is
included, as in a real run (num_workers 0). On a CPU each also reports samples per CPU second of this
process (``samples_per_cpu_s``), and the speedups use those: with ``--threads 1`` that is the rate on a
core of its own, which wall time on a shared machine is not. The model is the paper's TCMF (K = 4 shared layers,
d_e = 256). On CUDA it runs under bf16 autocast; ``step_throughput`` (used by bench/gpu_check.py) also
reports MFU.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kebr.masking import SentimentMasker, bundled_text_model_path, load_tokenizer
from kebr.mcc import MCCLoss, reference_modality_cosines
from kebr.model import KEBR, KEBRConfig
from kebr.shards import ShardDataset, ShardRow, write_shard
from kebr.train.data import make_loader, trimmed_length
from kebr.train.lm_cache import attach_lm_cache, build_sidecars
from kebr.train.loop import Objective, Runtime, adam, train_epoch
from kebr.train.settings import FinetuneSettings, PretrainSettings

# Dense bf16 tensor-core peaks, FLOP/s, by device name fragment.
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}
PEAK_FP32 = {"H100": 67e12, "H200": 67e12, "A100": 19.5e12}  # SXM, without TF32
T_A, D_A, T_V, D_V, L = 400, 33, 55, 709, 39
PRETRAIN_MCC, FINETUNE_MCC = PretrainSettings().mcc, FinetuneSettings().mcc  # each stage's default MCC


def mosi_lengths(n: int, seed: int = 0) -> np.ndarray:
    """Token counts (with [CLS]/[SEP]) shaped like MOSI's training texts: mean ~15, a tail to 39."""
    return np.clip(np.round(np.random.default_rng(seed).gamma(2.0, 6.0, n)) + 3, 3, L).astype(int)


def write_bench_shard(folder: Path, n: int, seed: int = 0, splits: tuple[str, ...] = ("train",)) -> Path:
    """A real shard of ``n`` clips with MOSI-shaped text lengths, clip i in ``splits[i % len(splits)]``
    (by default all in the train split)."""
    tokenizer = load_tokenizer("bundled")
    words = sorted(w for w in tokenizer.get_vocab() if w.isalpha() and w.islower() and len(w) >= 3)
    rng = np.random.default_rng(seed)
    masker = SentimentMasker(tokenizer, max_length=L, seed=seed)
    rows = []
    for i, length in enumerate(mosi_lengths(n, seed)):
        text = " ".join(rng.choice(words, size=max(int(length) - 2, 1)))
        clip_id = f"spk{i % 16}__clip{i:05d}"
        transcript = {"source": "gold", "avg_logprob": 0.0, "no_speech_prob": 0.0, "language_prob": 1.0,
                      "language": "en", "words": []}
        audio = rng.standard_normal((T_A, D_A), dtype=np.float32)
        video = rng.standard_normal((T_V, D_V), dtype=np.float32)
        rows.append(ShardRow(clip_id, splits[i % len(splits)], f"spk{i % 16}", float(rng.uniform(-3, 3)), transcript,
                             masker(text, clip_id), audio, video))
    return write_shard(folder / "00000.h5", rows, audio_columns=[f"a{j}" for j in range(D_A)],
                       visual_columns=[f"v{j}" for j in range(D_V)], audio_frames=T_A, visual_frames=T_V,
                       text_length=L, tokenizer=tokenizer, attrs={"dataset": "bench", "shard": "00000"})


SHAPES = {"minilm": {"hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12, "intermediate_size": 1536},
          "base": {}, "large": {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
                                "intermediate_size": 4096}}
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def bert_shaped(folder: Path, shape: str, tokenizer: Path | None = None) -> str:
    """An LM of all-MiniLM-L6-v2's (6 layers, 384 wide), BERT-base's (12, 768) or BERT-large's (24, 1024)
    shape with random weights and the uncased vocabulary's tokenizer files from ``tokenizer`` (default:
    the bundled MiniLM's). FLOPs and memory do not depend on the weights."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    BertModel(BertConfig(**SHAPES[shape]), add_pooling_layer=False).save_pretrained(folder)
    source = bundled_text_model_path() if tokenizer is None else Path(tokenizer)
    for name in TOKENIZER_FILES:
        if (source / name).exists():
            shutil.copy(source / name, folder / name)
    return str(folder)


def epoch_throughput(model: KEBR, dataset: Any, stage: str, *, runtime: Runtime, batch_size: int,
                     bucket: bool, trim: bool, lr: float, warmup: int = 2) -> dict[str, float]:
    """Samples/s of one training epoch (after ``warmup`` steps) and the mean padded batch length."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    lengths = dataset.text_lengths()
    loader = make_loader(dataset, batch_size, runtime, shuffle=True, num_workers=0, generator=generator,
                         bucket_by_length=bucket)
    objective = Objective(stage, PRETRAIN_MCC if stage == "pretrain" else FINETUNE_MCC)
    objective.trim = trim
    optimizer = adam(model.param_groups(lr, lr))
    train_epoch(model, loader, optimizer, objective, runtime, max_steps=warmup)
    widths = [trimmed_length(int(lengths[b].max()), L) if trim else L for g in loader.sampler for b in g]
    start, cpu_start = time.perf_counter(), time.process_time()
    _, _, samples = train_epoch(model, loader, optimizer, objective, runtime, max_steps=None)
    if runtime.device.type == "cuda":
        torch.cuda.synchronize()
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    out = {"samples_per_s": round(samples / seconds, 2), "mean_batch_tokens": round(float(np.mean(widths)), 1)}
    if runtime.device.type == "cpu":
        out["samples_per_cpu_s"] = round(samples / cpu_seconds, 2)
    return out


def rate(result: dict[str, float]) -> float:
    """The rate speedups compare: per CPU second on a CPU, per wall second on a GPU."""
    return result.get("samples_per_cpu_s", result["samples_per_s"])


def bench_finetune(shards: list[Path], runtime: Runtime, batch_size: int, warmup: int = 2) -> dict[str, Any]:
    dataset = ShardDataset(shards, split="train", labelled=True, stage="finetune")
    model = KEBR(KEBRConfig(d_audio=D_A, d_video=D_V)).to(runtime.device)
    model.pretrain_head.requires_grad_(False)
    out: dict[str, Any] = {}
    for name, bucket, trim in (("fixed", False, False), ("random", False, True), ("bucketed", True, True)):
        out[name] = epoch_throughput(model, dataset, "finetune", runtime=runtime, batch_size=batch_size,
                                     bucket=bucket, trim=trim, lr=5e-6, warmup=warmup)
    lengths = dataset.text_lengths()
    out["mean_text_tokens"] = round(float(lengths.mean()), 1)
    out["bucketing_speedup"] = round(rate(out["bucketed"]) / rate(out["random"]), 2)
    out["speedup_over_fixed"] = round(rate(out["bucketed"]) / rate(out["fixed"]), 2)
    return out


def bench_pretrain(shards: list[Path], runtime: Runtime, batch_size: int, text_model: str,
                   warmup: int = 2) -> dict[str, Any]:
    dataset = ShardDataset(shards, stage="pretrain")
    model = KEBR(KEBRConfig(d_audio=D_A, d_video=D_V, text_model=text_model, freeze_text=True)).to(runtime.device)
    model.finetune_head.requires_grad_(False)
    uncached = epoch_throughput(model, dataset, "pretrain", runtime=runtime, batch_size=batch_size,
                                bucket=True, trim=True, lr=1e-4, warmup=warmup)
    start = time.perf_counter()
    sidecars = build_sidecars(dataset.paths, model.text, dtype="float16", runtime=runtime)
    build = time.perf_counter() - start
    cached = epoch_throughput(model, attach_lm_cache(dataset, sidecars), "pretrain", runtime=runtime,
                              batch_size=batch_size, bucket=True, trim=True, lr=1e-4, warmup=warmup)
    size = sum(p.stat().st_size for p in sidecars)
    for p in sidecars:
        p.unlink()
    return {"uncached": uncached, "cached": cached, "cache_speedup": round(rate(cached) / rate(uncached), 2),
            "cache_build_s": round(build, 2), "sidecar_mb_per_1000_clips": round(size / len(dataset) * 1000 / 1e6, 1),
            "d_text": model.text.hidden_size}


# ---- single steps on fixed-size batches (MFU; also bench/gpu_check.py) --------------------------------


def synthetic_batch(b: int, device: torch.device, vocab: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "input_ids": torch.randint(1000, vocab, (b, L), generator=g).to(device),
        "attention_mask": torch.ones(b, L, dtype=torch.bool, device=device),
        "audio": torch.randn(b, T_A, D_A, generator=g).to(device),
        "audio_mask": torch.ones(b, T_A, dtype=torch.bool, device=device),
        "video": torch.randn(b, T_V, D_V, generator=g).to(device),
        "video_mask": torch.ones(b, T_V, dtype=torch.bool, device=device),
        "mask_index": torch.full((b,), 5, device=device),
        "target": torch.rand(b, generator=g).to(device) * 6 - 3,
    }


def seconds_per_call(fn, calls: int, device: torch.device) -> float:
    """Mean wall seconds of ``fn()`` over ``calls`` calls, after one untimed warm-up call."""
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / calls


def step_throughput(text_model: str, stage: str, batch_size: int, steps: int, device: torch.device,
                    d_video: int = D_V, amp: bool | None = None) -> dict[str, Any]:
    """Samples/s of full training steps (forward, L1 + MCC, backward, Adam) on 39-token batches, under
    bf16 autocast (``amp``; default: on CUDA) or in fp32, and MFU on CUDA (6 x trained parameters + 2 x
    frozen ones x tokens/s, against the GPU's dense peak for that precision: bf16 tensor cores, or
    fp32 without TF32, PyTorch's default)."""
    config = KEBRConfig(d_audio=D_A, d_video=d_video, text_model=text_model, freeze_text=stage == "pretrain")
    model = KEBR(config).to(device).train()
    inputs = synthetic_batch(batch_size, device, model.text.model.config.vocab_size)
    if d_video != D_V:
        inputs["video"] = inputs["video"][..., :d_video]
    kwargs = {k: v for k, v in inputs.items() if k != "target" and (stage == "pretrain" or k != "mask_index")}
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-5, fused=True)
    settings = PRETRAIN_MCC if stage == "pretrain" else FINETUNE_MCC
    mcc = MCCLoss(g=settings.g, variant=settings.variant, stage=stage, weight=settings.weight, scale=settings.scale)
    amp = device.type == "cuda" if amp is None else amp

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out = model(**kwargs)
        loss = torch.nn.functional.l1_loss(out["prediction"].float(), inputs["target"])
        loss = loss + mcc(out["fused"], inputs["audio"], inputs["video"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    seconds = seconds_per_call(step, steps, device)
    result: dict[str, Any] = {"samples_per_s": round(batch_size / seconds, 2)}
    if device.type == "cuda":
        trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
        frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
        peaks = PEAK_BF16 if amp else PEAK_FP32
        peak = next((v for k, v in peaks.items() if k in torch.cuda.get_device_name()), None)
        if peak:
            result["mfu"] = round((6 * trained + 2 * frozen) * batch_size * L / seconds / peak, 4)
    return result


def reference_mcc(fused: torch.Tensor, audio: torch.Tensor, video: torch.Tensor, g: float, weight: float,
                  stage: str) -> torch.Tensor:
    """The reference's MCC: cosines and loss one sample at a time in Python (spec section 4)."""
    cos_a, cos_v = reference_modality_cosines(fused, audio, video)
    losses = []
    for a, v in zip(cos_a, cos_v):
        if stage == "pretrain":
            c = (a + v) / 2
            losses.append(torch.abs(torch.cos(math.pi * (c + g))) if c >= 0 else 1 - c)
        elif a >= 0 and v >= 0:
            losses.append(torch.abs(torch.cos(math.pi * ((a + v) / 2 + g) * torch.exp(torch.abs(a - v) / 2))))
        else:
            losses.append(1 + torch.abs(a) + torch.abs(v))
    return weight * torch.stack(losses).mean()


def bench_mcc(batch_size: int, d_text: int, device: torch.device, calls: int) -> dict[str, Any]:
    """MCC forward + backward alone on the model's shapes: ours against the reference's loop."""
    out = {}
    for stage, mcc in (("pretrain", PRETRAIN_MCC), ("finetune", FINETUNE_MCC)):
        g = torch.Generator().manual_seed(1)
        fused = torch.randn(batch_size, L, d_text, generator=g).to(device).requires_grad_()
        audio = torch.randn(batch_size, T_A, D_A, generator=g).to(device)
        video = torch.randn(batch_size, T_V, D_V, generator=g).to(device)
        ours = MCCLoss(g=mcc.g, variant="reference", stage=stage, weight=mcc.weight)
        times = {"ours": [], "loop": []}
        for _ in range(3):  # alternate, keep the medians: drift in machine load hits both alike
            times["ours"].append(seconds_per_call(lambda: ours(fused, audio, video).backward(), calls, device))
            times["loop"].append(seconds_per_call(
                lambda: reference_mcc(fused, audio, video, mcc.g, mcc.weight, stage).backward(), calls, device))
        t_ours, t_loop = (statistics.median(times[k]) for k in ("ours", "loop"))
        out[stage] = {"mcc_ms": round(1e3 * t_ours, 3), "mcc_ms_reference_loop": round(1e3 * t_loop, 3),
                      "mcc_speedup": round(t_loop / t_ours, 2)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--shaped", nargs="*", choices=sorted(SHAPES), default=["base"],
                        help="also time pretraining with BERT-shaped LMs of random weights")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    runtime = Runtime(device, rank=0, world_size=1, amp=device.type == "cuda")
    work = Path(tempfile.mkdtemp(prefix="kebr-bench-train-"))
    try:
        shards = [write_bench_shard(work / "shards", args.clips)]
        report: dict[str, Any] = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                                  "threads": torch.get_num_threads(), "clips": args.clips,
                                  "batch_size": args.batch_size}
        report["finetune"] = bench_finetune(shards, runtime, args.batch_size)
        report["pretrain"] = {"bundled": bench_pretrain(shards, runtime, args.batch_size, "bundled")}
        for shape in args.shaped:
            lm = bert_shaped(work / f"bert-{shape}-shaped", shape)
            report["pretrain"][f"bert-{shape}-shaped"] = bench_pretrain(shards, runtime, args.batch_size, lm)
        report["mcc"] = bench_mcc(args.batch_size, 384, device, calls=10)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
