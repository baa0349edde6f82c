"""Stage output size and the cost of the supervised worker, on the embedded demo corpus.

    python bench/stage_outputs.py [--out-dir DIR]

For each media stage (asr, audio, visual) over every demo clip as one shard, prints one JSON object:

- ``bytes_per_1000_clips``: the stage output as written (HDF5, gzip + byte-shuffle; kebr/journal.py)
  and as the JSON-lines + base64 float32 format it replaced would hold the same records;
- ``seconds``: the stage as a job runs it (``run_media_stage``: a spawned, supervised worker, the
  journal fsynced per clip, the output written) against the same work in this process (the model
  loaded here, every clip processed, nothing journaled), and their difference: the overhead per shard;
- ``worker_start_s``: starting one worker and loading its models, against loading them in this process.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from features import demo_clips  # bench/features.py: bench/ is on sys.path when a bench script runs
from kebr.stages import supervise
from kebr.stages import work as stage_work
from kebr.journal import read_stage_output
from kebr.worker import StopSignals, Worker


def old_format_bytes(meta: dict, records: dict) -> int:
    """Bytes of the same records as JSON lines with base64 float32 arrays (the format before)."""
    def encode(record: dict) -> dict:
        out = dict(record)
        if isinstance(out.get("features"), np.ndarray):
            a = np.ascontiguousarray(out["features"], dtype=np.float32)
            out["features"] = {"shape": list(a.shape), "b64": base64.b64encode(a.tobytes()).decode("ascii")}
        return out
    lines = [json.dumps({"meta": meta})] + [json.dumps(encode(r)) for r in records.values()]
    return sum(len(line.encode()) + 1 for line in lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out-dir", type=Path, default=Path(tempfile.mkdtemp(prefix="kebr-bench-")))
    args = parser.parse_args()
    config, clips, work = demo_clips(args.out_dir)
    report: dict = {"clips": len(clips), "cpus": os.cpu_count(), "machine": platform.machine(), "stages": {}}
    for stage in ("asr", "audio", "visual"):
        out = work / f"{stage}.h5"
        out.unlink(missing_ok=True)
        start = time.perf_counter()
        supervise.run_media_stage(stage, config, "demo_unlabelled", clips, out)
        supervised = time.perf_counter() - start

        factory = getattr(stage_work, stage_work.WORK[stage].split(":")[1])
        start = time.perf_counter()
        in_process_work = factory(config)
        load_here = time.perf_counter() - start
        in_process_work.process(clips, 0)
        in_process = time.perf_counter() - start
        del in_process_work

        with StopSignals() as stop, Worker(stage_work.WORK[stage], (config,), stop, stage) as worker:
            start = time.perf_counter()
            worker.start()
            worker_start = time.perf_counter() - start

        meta, records = read_stage_output(out)
        scale = 1000 / len(clips)
        report["stages"][stage] = {
            "bytes_per_1000_clips": {"hdf5": round(out.stat().st_size * scale),
                                     "jsonl_base64_before": round(old_format_bytes(meta, records) * scale)},
            "audio_or_visual_frames_per_clip": round(float(np.mean([len(r["features"]) for r in records.values()
                                                                    if "features" in r])), 1)
            if stage != "asr" else None,
            "seconds": {"supervised_job": round(supervised, 2), "in_process": round(in_process, 2),
                        "overhead": round(supervised - in_process, 2)},
            "worker_start_s": {"spawned_worker": round(worker_start, 2), "in_process_load": round(load_here, 2)},
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
