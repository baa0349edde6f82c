"""What writing training states costs fine-tuning: after every epoch (``checkpoint_minutes: 0``, how
every run saved before) against by the clock (``checkpoint_minutes: 10``, the default), in one process.

    python bench/checkpoint.py [--clips 40] [--epochs 30] [--threads 2]

Both runs fine-tune the bundled MiniLM KEBR of config.yaml's model settings with the demo's
fine-tuning settings (``datasets.demo_labelled.finetune``: batch 8, its learning rates) on one real
shard written by bench/train.py (``write_bench_shard``: real sentences, random features of the
reference's sizes; 40 clips split 6:2:2 into train, valid and test, the demo's scale), from the same
seed, on the CPU. Prints for each the wall seconds, the states written and the bytes this process
wrote (``/proc/self/io`` write_bytes: the states are fsynced), whether the two give the same test
metrics, and one JSON line: ``seconds_every_epoch``, ``seconds_by_clock``, ``speedup``,
``gb_written_every_epoch``, ``gb_written_by_clock``, ``same_metrics``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from train import D_A, D_V, write_bench_shard  # noqa: E402

from kebr.config import load_config  # noqa: E402
from kebr.model import KEBRConfig  # noqa: E402
from kebr.train import loop  # noqa: E402
from kebr.train.finetune import finetune  # noqa: E402
from kebr.train.settings import FinetuneSettings  # noqa: E402
from kebr.variants import recipe  # noqa: E402


def written_bytes() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    raise RuntimeError("no write_bytes in /proc/self/io")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    config = load_config(REPO / "config.yaml")
    full = recipe(config, "full", "demo_labelled")
    settings = replace(FinetuneSettings.from_config(full["finetune"]), device="cpu", epochs=args.epochs,
                       num_workers=0, log_every_steps=0)
    model_config = KEBRConfig(d_audio=D_A, d_video=D_V, freeze_text=False, **full["model"])
    writes: list[int] = []
    save_state = loop.save_state
    loop.save_state = lambda run_dir, epoch, **kw: writes.append(epoch) or save_state(run_dir, epoch, **kw)

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        shard = write_bench_shard(Path(tmp) / "shards", args.clips, splits=("train",) * 6 + ("valid",) * 2 + ("test",) * 2)
        for name, minutes in (("every_epoch", 0), ("by_clock", 10)):
            writes.clear()
            before, started = written_bytes(), time.perf_counter()
            metrics = finetune([shard], Path(tmp) / name, model_config=model_config, pretrained=None, seed=0,
                               settings=replace(settings, checkpoint_minutes=minutes))
            seconds, written = time.perf_counter() - started, written_bytes() - before
            results[name] = {"seconds": seconds, "gb_written": written / 1e9, "states": len(writes), "metrics": metrics}
            print(f"{name:>12}: {seconds:6.1f} s, {len(writes)} states written, {written / 1e9:.2f} GB written, "
                  f"test MAE {metrics['mae']:.4f}")
    same = results["every_epoch"]["metrics"] == results["by_clock"]["metrics"]
    speedup = results["every_epoch"]["seconds"] / results["by_clock"]["seconds"]
    print(f"by the clock: {speedup:.2f}x as fast as a state every epoch; same test metrics: {same}")
    print(json.dumps({"seconds_every_epoch": round(results["every_epoch"]["seconds"], 2),
                      "seconds_by_clock": round(results["by_clock"]["seconds"], 2), "speedup": round(speedup, 2),
                      "gb_written_every_epoch": round(results["every_epoch"]["gb_written"], 3),
                      "gb_written_by_clock": round(results["by_clock"]["gb_written"], 3), "same_metrics": same,
                      "epochs": args.epochs, "clips": args.clips, "threads": args.threads}))


if __name__ == "__main__":
    main()
