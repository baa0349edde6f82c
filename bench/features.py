"""Feature-extraction throughput on the embedded demo corpus: clips/s per stage and end to end.

    python bench/features.py [--out-dir DIR] [--asr-batch-size N]

Writes the demo corpora (unless DIR already holds them), plans both, runs every per-shard stage in
this process, and prints one JSON object. ASR runs on every clip (gold text off) so that its cost
is measured on the labelled corpus too. Model loading is included: it is part of a shard job (each
media stage runs in its supervised worker process, as in a real job: kebr/worker.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from kebr.stages import assemble, supervise
from kebr.config import validate_config
from kebr.demo.corpus import write_demo_corpora
from kebr.ingest import plan_clips


def demo_clips(out_dir: Path, asr: dict | None = None) -> tuple[dict, list, Path]:
    """(config, every clip of both demo corpora, an empty work folder) under ``out_dir``: the demo
    corpora written unless there, ASR on every clip (gold text off) with ``asr`` keys over that. The
    benches run all the clips as one shard of demo_unlabelled. Also used by bench/stage_outputs.py."""
    corpus = out_dir / "demo"
    if not (corpus / "README.txt").exists():
        write_demo_corpora(corpus)
    config = validate_config({
        "results": str(out_dir / "results"),
        "datasets": {"demo_unlabelled": {"layout": "voxceleb2", "root": str(corpus / "voxceleb2")},
                     "demo_labelled": {"layout": "mmsa_raw", "root": str(corpus / "mosi")}},
        "asr": {"use_gold_text": False, **(asr or {})},
    })
    clips = [c for d in config["datasets"].values() for c in plan_clips(d, config["seed"], 10**9, 0.1, 0.1)]
    work = out_dir / "work"
    work.mkdir(parents=True, exist_ok=True)
    return config, clips, work


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out-dir", type=Path, default=Path(tempfile.mkdtemp(prefix="kebr-bench-")))
    parser.add_argument("--asr-batch-size", type=int, default=1)
    args = parser.parse_args()

    config, clips, work = demo_clips(args.out_dir, {"batch_size": args.asr_batch_size})
    paths = {s: work / f"{s}.h5" for s in ("asr", "audio", "visual")}
    for p in [*paths.values(), work / "shard.h5", work / "status.tsv"]:
        p.unlink(missing_ok=True)

    seconds: dict[str, float] = {}
    for stage in ("asr", "audio", "visual"):
        start = time.perf_counter()
        supervise.run_media_stage(stage, config, "demo_unlabelled", clips, paths[stage])
        seconds[stage] = time.perf_counter() - start
    start = time.perf_counter()
    assemble.run_assemble(config, "demo_unlabelled", "00000", clips, paths["asr"], paths["audio"], paths["visual"],
                        work / "shard.h5", work / "status.tsv")
    seconds["assemble"] = time.perf_counter() - start
    ok = sum(r["status"] == "ok" for r in assemble.read_status(work / "status.tsv"))

    n = len(clips)
    print(json.dumps({
        "clips": n, "ok": ok, "cpus": os.cpu_count(), "machine": platform.machine(),
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
        "clips_per_s": {k: round(n / v, 2) for k, v in seconds.items()},
        "end_to_end_clips_per_s": round(n / sum(seconds.values()), 2),
    }, indent=2))


if __name__ == "__main__":
    main()
