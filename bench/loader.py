"""The training input pipeline on a VoxCeleb2-shaped corpus: batched reads against per-row reads.

    python bench/loader.py [--shards 1000] [--rows-per-shard 64] [--work DIR] [--keep]

Synthesises ``--shards`` shards of ``--rows-per-shard`` clips with VoxCeleb2's real widths (audio
400 x 33 librosa features, MediaPipe visual 55 x 94, text 39 tokens) and their LM-cache sidecars
(float16 MiniLM states 39 x 384): one shard is written by ``kebr.shards.write_shard`` from real masked
sentences, its sidecar by ``kebr.train.lm_cache.build_sidecars`` with the bundled MiniLM, and both are
copied (files, not links) to make the corpus. Twice: as shards are written now (contiguous,
uncompressed) and as they were before (one gzip-4 chunk per clip).

Per corpus, the rows/s of one loader process reading what pretraining reads (masked text, mask
index and label, audio, visual, their lengths, the cached LM states):
- ``batched``: kebr's pipeline, ``GroupSampler`` groups read by ``GroupReader`` (kebr/train/data.py);
- ``per_row``: a plain per-row h5py read of the same fields (one read per field per row, files kept
  open up to kebr's limit), rows in random order: how the loader read before.
Each cold (the files dropped from the page cache with posix_fadvise after an fsync) and warm (the
same rows again). Rates are rows per CPU second of this process (warm: what a process can feed) and
per wall second (cold: the disk's share shows there).

Then pretraining steps/s on the CPU (MiniLM-width cached states, TCMF, batch 32, one thread) fed by
the real loader (``make_loader``, one persistent worker) against the same batches already in memory:
``steps_vs_in_memory`` (target >= 0.9: the loader is never the limit).

Ends with one JSON line (also written to bench/results/loader.json): ``rows_per_s_per_process``
(batched, warm, this layout), ``speedup_vs_per_row`` (the same shards), ``steps_vs_in_memory``.
Targets (warm page cache): >= 2,000 rows/s per loader process and >= 10x the per-row read.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from kebr.masking import SentimentMasker, load_tokenizer
from kebr.model import KEBR, KEBRConfig, TextEncoder
from kebr.shards import MAX_OPEN_FILES, OpenFiles, ShardDataset, ShardRow, write_shard
from kebr.train.data import GroupReader, GroupSampler, make_loader
from kebr.train.lm_cache import attach_lm_cache, build_sidecars
from kebr.train.loop import Objective, Runtime, adam, train_epoch
from kebr.train.settings import PretrainSettings

T_A, D_A, T_V, D_V, L = 400, 33, 55, 94, 39
CPU = Runtime(torch.device("cpu"), rank=0, world_size=1, amp=False)
RESULTS = Path(__file__).resolve().parent / "results"
SENTENCES = ["I absolutely loved this movie, it was wonderful", "the plot was boring and the acting terrible",
             "it was okay, nothing special really", "what a horrible waste of two hours",
             "the soundtrack is great and the cast is charming", "honestly the worst sequel I have ever seen"]
PRETRAIN_FIELDS = ("text/input_ids", "text/attention_mask", "text/mask_index", "text/mask_label",
                   "audio/features", "audio/lengths", "visual/features", "visual/lengths")


def smooth(rng: np.random.Generator, n: int, t: int, d: int) -> np.ndarray:
    """Feature-like float32 values: random walks over time (compress as real features do, i.e. little)."""
    return np.cumsum(rng.standard_normal((n, t, d), dtype=np.float32) * 0.1, axis=1).astype(np.float32)


def gzip_layout() -> Any:
    """The shards' layout before: 2-D and 3-D arrays in gzip-4 chunks, one clip per chunk (frames)."""
    def put(group: h5py.Group, name: str, data: np.ndarray, **kw: Any) -> h5py.Dataset:
        if data.ndim >= 2 and len(data):
            kw.update(chunks=(1 if data.ndim == 3 else min(len(data), 64),) + data.shape[1:],
                      compression="gzip", compression_opts=4, shuffle=True)
        return group.create_dataset(name, data=data, track_times=False, **kw)
    return put


def write_corpus(folder: Path, shards: int, rows: int, layout: str, text_model: str = "bundled",
                 ) -> tuple[list[Path], list[Path]]:
    """``shards`` copies of one real shard (and its real LM-cache sidecar, computed by ``text_model``)
    in ``folder``."""
    import kebr.shards

    tokenizer = load_tokenizer(text_model)
    masker = SentimentMasker(tokenizer, max_length=L, seed=0)
    rng = np.random.default_rng(0)
    audio, visual = smooth(rng, rows, T_A, D_A), smooth(rng, rows, T_V, D_V)
    transcript = {"source": "asr", "avg_logprob": -0.2, "no_speech_prob": 0.01, "language_prob": 0.99,
                  "language": "en", "words": []}
    clips = [ShardRow(f"id{i:05d}/clip{i:03d}", "train", f"id{i:05d}", None, transcript,
                      masker(SENTENCES[i % len(SENTENCES)], str(i)), audio[i][: T_A - i % 50], visual[i])
             for i in range(rows)]
    put = kebr.shards._put
    if layout == "gzip":
        kebr.shards._put = gzip_layout()
    try:
        template = write_shard(folder / "template" / "00000.h5", clips, audio_columns=[f"a{j}" for j in range(D_A)],
                               visual_columns=[f"v{j}" for j in range(D_V)], audio_frames=T_A, visual_frames=T_V,
                               text_length=L, tokenizer=tokenizer, attrs={"dataset": "voxceleb2-shaped"})
    finally:
        kebr.shards._put = put
    [sidecar] = build_sidecars([template], TextEncoder(text_model, freeze=True), dtype="float16", runtime=CPU)
    if layout == "gzip":  # the sidecar as it was: one chunk per clip
        with h5py.File(sidecar, "r+") as f:
            hidden = f["hidden"][()]
            del f["hidden"]
            f.create_dataset("hidden", data=hidden, chunks=(1, L, hidden.shape[2]), track_times=False)
    (folder / "lm_cache").mkdir()
    paths = [Path(shutil.copyfile(template, folder / f"{s:05d}.h5")) for s in range(shards)]
    return paths, [Path(shutil.copyfile(sidecar, folder / "lm_cache" / p.name)) for p in paths]


def drop_from_page_cache(paths: list[Path]) -> None:
    """Evict the files' pages (written back first), so the next read comes from the disk."""
    os.sync()
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def timed(fn: Any) -> tuple[int, float, float]:
    """(rows, wall s, CPU s of this process) of ``fn()``, which returns the rows it read."""
    wall, cpu = time.perf_counter(), time.process_time()
    rows = fn()
    return rows, time.perf_counter() - wall, time.process_time() - cpu


def per_row_reader(paths: list[Path], sidecars: list[Path], items: np.ndarray) -> Any:
    """A plain per-row read of the pretraining fields: one h5py read per field per row."""
    shards, sides = OpenFiles(paths, MAX_OPEN_FILES), OpenFiles(sidecars, MAX_OPEN_FILES)
    rows = len(h5py.File(paths[0], "r")["id"])

    def read() -> int:
        for item in items:
            s, r = divmod(int(item), rows)
            f = shards[s]
            row = {name: f[name][r] for name in PRETRAIN_FIELDS}
            row["hidden"] = sides[s]["hidden"][r]
        shards.close()
        sides.close()
        return len(items)
    return read


def batched_reader(dataset: ShardDataset, groups: list[list[np.ndarray]]) -> Any:
    reader = GroupReader(dataset)

    def read() -> int:
        n = sum(reader[g][1][-1] for g in groups)  # (rows, batch bounds): the last bound is the row count
        dataset.close()
        return n
    return read


def rate(rows: int, wall: float, cpu: float) -> dict[str, float]:
    return {"rows_per_cpu_s": round(rows / cpu, 1), "rows_per_wall_s": round(rows / wall, 1)}


def bench_layout(folder: Path, layout: str, shards: int, rows: int, per_row_rows: int, batched_rows: int,
                 ) -> dict[str, Any]:
    started = time.perf_counter()
    paths, sidecars = write_corpus(folder, shards, rows, layout)
    written = time.perf_counter() - started
    files = paths + sidecars
    dataset = attach_lm_cache(ShardDataset(paths, stage="pretrain"), sidecars)
    sampler = GroupSampler(dataset.index[:, 0], 32, torch.Generator().manual_seed(0), lengths=dataset.text_lengths())
    groups = []
    for group in sampler:
        groups.append(group)
        if sum(map(len, group)) * len(groups) >= batched_rows:
            break
    items = np.random.default_rng(1).permutation(len(dataset))[:per_row_rows]
    out: dict[str, Any] = {"bytes_per_clip": round(sum(p.stat().st_size for p in files) / len(dataset)),
                           "write_s": round(written, 1)}
    for name, read in (("batched", batched_reader(dataset, groups)), ("per_row", per_row_reader(paths, sidecars, items))):
        drop_from_page_cache(files)
        out[f"{name}_cold"] = rate(*timed(read))
        out[f"{name}_warm"] = rate(*timed(read))
    out["speedup_warm"] = round(out["batched_warm"]["rows_per_cpu_s"] / out["per_row_warm"]["rows_per_cpu_s"], 1)
    out["speedup_cold"] = round(out["batched_cold"]["rows_per_wall_s"] / out["per_row_cold"]["rows_per_wall_s"], 1)
    return out


def loader_vs_memory(model: KEBR, loader: Any, generator: torch.Generator, runtime: Runtime, steps: int,
                     rounds: int = 2) -> dict[str, float]:
    """Pretraining steps/s fed by ``loader`` and by the same ``steps`` batches already in host memory,
    alternated ``rounds`` times (the best round of each counts: a shared machine's noise only slows)."""
    objective = Objective("pretrain", PretrainSettings().mcc)
    optimizer = adam(model.param_groups(1e-4, 1e-4))
    train_epoch(model, loader, optimizer, objective, runtime, max_steps=2)  # warm-up: workers start
    epoch = generator.get_state()
    in_memory = [b for _, b in zip(range(steps), loader)]
    best = {"loader": 0.0, "in_memory": 0.0}
    for _ in range(rounds):
        for name, batches in (("loader", loader), ("in_memory", in_memory)):
            generator.set_state(epoch)  # both feeds train on the same batches
            if runtime.device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            _, done, _ = train_epoch(model, batches, optimizer, objective, runtime, max_steps=steps)
            if runtime.device.type == "cuda":
                torch.cuda.synchronize()
            best[name] = max(best[name], done / (time.perf_counter() - start))
    return {"loader_steps_per_s": round(best["loader"], 3), "in_memory_steps_per_s": round(best["in_memory"], 3),
            "steps_vs_in_memory": round(best["loader"] / best["in_memory"], 3)}


def bench_steps(folder: Path, steps: int) -> dict[str, Any]:
    """Pretraining steps/s on the CPU (cached LM states, one thread) through the real loader (one
    persistent worker) and from batches in memory."""
    paths = sorted(folder.glob("0*.h5"))
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = KEBR(KEBRConfig(d_audio=D_A, d_video=D_V, freeze_text=True))
    model.finetune_head.requires_grad_(False)
    dataset = attach_lm_cache(ShardDataset(paths, stage="pretrain"), [folder / "lm_cache" / p.name for p in paths])
    generator = torch.Generator().manual_seed(0)
    loader = make_loader(dataset, 32, CPU, shuffle=True, num_workers=1, generator=generator, bucket_by_length=True)
    return loader_vs_memory(model, loader, generator, CPU, steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", type=int, default=1000)
    parser.add_argument("--rows-per-shard", type=int, default=128)
    parser.add_argument("--per-row-rows", type=int, default=2000, help="rows the per-row read reads")
    parser.add_argument("--batched-rows", type=int, default=8192, help="rows the batched read reads")
    parser.add_argument("--steps", type=int, default=20, help="training steps per feed")
    parser.add_argument("--work", type=Path, default=None, help="folder for the corpus (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the corpus")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kebr-loader-", dir=args.work))
    result: dict[str, Any] = {"shards": args.shards, "rows_per_shard": args.rows_per_shard}
    try:
        for layout in ("contiguous", "gzip"):
            result[layout] = bench_layout(work / layout, layout, args.shards, args.rows_per_shard,
                                          args.per_row_rows, args.batched_rows)
            print(layout, json.dumps(result[layout]), flush=True)
            if layout == "contiguous":
                result["steps"] = bench_steps(work / layout, args.steps)
                print("steps", json.dumps(result["steps"]), flush=True)
                if not args.keep:
                    shutil.rmtree(work / layout)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    now = result["contiguous"]
    headline = {"bench": "loader", "date": date.today().isoformat(), "machine": f"{platform.machine()} "
                f"{os.cpu_count()} cores", "rows_per_s_per_process": now["batched_warm"]["rows_per_cpu_s"],
                "speedup_vs_per_row": now["speedup_warm"], "steps_vs_in_memory": result["steps"]["steps_vs_in_memory"],
                "cold_rows_per_s": now["batched_cold"]["rows_per_wall_s"], "cold_speedup_vs_per_row": now["speedup_cold"],
                "gzip_rows_per_s_per_process": result["gzip"]["batched_warm"]["rows_per_cpu_s"],
                "gzip_cold_rows_per_s": result["gzip"]["batched_cold"]["rows_per_wall_s"],
                "bytes_per_clip": now["bytes_per_clip"], "gzip_bytes_per_clip": result["gzip"]["bytes_per_clip"],
                "detail": result}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "loader.json").write_text(json.dumps(headline) + "\n")
    print(json.dumps(headline))


if __name__ == "__main__":
    main()
