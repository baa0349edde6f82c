"""Importing an MMSA feature pickle: time and peak memory of each job, on a pickle of MOSEI's shapes.

    python bench/mmsa.py [--scale 0.1] [--out-dir DIR]

Writes a pickle with MMSA's unaligned MOSEI layout (16,326 / 1,871 / 4,659 clips; audio (N, 500, 74),
vision (N, 375, 35), text (N, 50, 768), text_bert (N, 3, 50): thuiar/MMSA config_regression.json)
scaled to ``scale`` of the clips, then runs each job as Snakemake would, in its own process under
/usr/bin/time: the restricted unpickling alone, ``kebr plan`` (the one job that unpickles), one
``kebr mmsa-import`` shard job and its ``kebr assemble``. Prints one JSON object; the full-size
numbers scale with the clip count (the plan) or stay per shard (the rest).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from kebr import paths

MOSEI = {"train": 16326, "valid": 1871, "test": 4659}
T_A, D_A, T_V, D_V, L = 500, 74, 375, 35, 50


def write_pickle(path: Path, scale: float, rng: np.random.Generator) -> int:
    data, clip = {}, 0
    for split, full in MOSEI.items():
        n = max(2, round(full * scale))
        ids = [f"video{(clip + i) // 10:05d}_{split}$_${(clip + i) % 10}" for i in range(n)]
        clip += n
        audio = rng.standard_normal((n, T_A, D_A), dtype=np.float32)
        audio[:, ::37, 3] = -np.inf
        data[split] = {
            "id": np.array(ids), "raw_text": np.array(["it was a great and moving film"] * n),
            "audio": audio, "vision": rng.standard_normal((n, T_V, D_V), dtype=np.float32),
            "text": rng.standard_normal((n, L, 768), dtype=np.float32),
            "text_bert": np.ones((n, 3, L), dtype=np.float32),
            "audio_lengths": rng.integers(T_A // 4, T_A + 1, n), "vision_lengths": rng.integers(T_V // 4, T_V + 1, n),
            "regression_labels": rng.uniform(-3, 3, n).astype(np.float32),
        }
    with path.open("wb") as f:
        pickle.dump(data, f, protocol=4)
    return clip


def timed(cmd: list[str], cwd: Path) -> dict[str, float]:
    """Wall seconds and peak RSS (MB) of one command."""
    result = subprocess.run(["/usr/bin/time", "-f", "%e %M", *cmd], cwd=cwd, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    if result.returncode != 0:
        raise RuntimeError(f"{cmd} failed:\n{result.stderr[-3000:]}")
    seconds, kb = result.stderr.strip().splitlines()[-1].split()
    return {"s": float(seconds), "max_rss_mb": round(int(kb) / 1024)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=float, default=0.1)
    parser.add_argument("--out-dir", type=Path, default=Path(tempfile.mkdtemp(prefix="kebr-bench-mmsa-")))
    args = parser.parse_args()
    work = args.out_dir
    work.mkdir(parents=True, exist_ok=True)
    pkl = work / "unaligned_50.pkl"
    start = time.perf_counter()
    clips = write_pickle(pkl, args.scale, np.random.default_rng(0))
    written_s = time.perf_counter() - start
    (work / "config.yaml").write_text(
        f"results: {work / 'results'}\n"
        f"datasets:\n  mosei: {{layout: mmsa_pickle, pickle: {pkl}, trust_pickle: true}}\n")
    python = [sys.executable, "-m", "kebr"]
    results = work / "results"
    shard = "00000"
    stage = {s: paths.stage_output(results, "mosei", s, shard) for s in paths.STAGE_OUTPUTS}
    steps = {
        "unpickle": timed([sys.executable, "-c", f"from kebr.mmsa import load_pickle; load_pickle({str(pkl)!r}, True)"],
                          work),
        "plan": timed([*python, "plan", "--config", "config.yaml", "--dataset", "mosei",
                       "--out", paths.plan_dir(results, "mosei")], work),
    }
    for path in stage.values():
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    steps["mmsa_import_one_shard"] = timed(
        [*python, "mmsa-import", "--plan", paths.plan(results, "mosei", shard),
         "--arrays", paths.plan_arrays(results, "mosei", shard),
         *(a for s, p in stage.items() for a in (f"--{s}", p))], work)
    steps["assemble_one_shard"] = timed(
        [*python, "assemble", "--config", "config.yaml", "--dataset", "mosei", "--plan",
         paths.plan(results, "mosei", shard), *(a for s, p in stage.items() for a in (f"--{s}", p)),
         "--out", paths.shard(results, "mosei", shard), "--status", paths.status(results, "mosei", shard)], work)
    plan_files = sorted(Path(paths.plan_dir(results, "mosei")).glob("*.mmsa.h5"))
    print(json.dumps({
        "scale": args.scale, "clips": clips, "pickle_mb": round(pkl.stat().st_size / 2**20),
        "pickle_write_s": round(written_s, 1), "shards": len(plan_files),
        "plan_arrays_mb": round(sum(p.stat().st_size for p in plan_files) / 2**20),
        "shard_mb": round(Path(paths.shard(results, "mosei", shard)).stat().st_size / 2**20), **steps,
        "cpus": os.cpu_count(), "load_average": os.getloadavg()[0],
    }, indent=2))


if __name__ == "__main__":
    main()
