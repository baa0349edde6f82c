"""Supervised workers on a real GPU: CUDA errors are transient, and the worker after one has a GPU
that works. Needs torch with CUDA (and nothing else of kebr's dependencies).

    python bench/gpu_worker.py

Runs ``kebr.worker.Worker`` with a small CUDA work class and prints one JSON line per task: what
came back (done, transient, crashed), the worker start count, and the seconds. The tasks: a CUDA
computation; a CUDA out-of-memory error; a device-side assert (it leaves the CUDA context unusable);
a segfault in a worker holding a CUDA context; and a CUDA computation after each of them.
"""

from __future__ import annotations

import ctypes
import json
import time

from kebr.worker import StopSignals, Worker


class CudaWork:
    """What a GPU stage's worker does, reduced to the failure modes (the ASR stage's real work is
    faster-whisper on CUDA)."""

    def __init__(self) -> None:
        import torch

        self.torch = torch
        torch.zeros(1, device="cuda")  # create the context now, as a model load would

    def meta(self) -> dict:
        return {"device": self.torch.cuda.get_device_name(), "torch": self.torch.__version__}

    def process(self, clips: list[str], attempt: int) -> list[dict]:
        torch = self.torch
        for clip in clips:
            if clip == "oom":
                torch.empty(1 << 46, dtype=torch.uint8, device="cuda")  # 64 TiB
            elif clip == "assert":
                x = torch.zeros(4, device="cuda")
                x[torch.tensor([10], device="cuda")] = 1.0  # out of range: a device-side assert
                torch.cuda.synchronize()
            elif clip == "segv":
                ctypes.string_at(0)
        value = torch.arange(1000, device="cuda", dtype=torch.float32).sum().item()
        return [{"clip_id": c, "sum": value} for c in clips]


def main() -> None:
    tasks = ["ok", "oom", "ok", "assert", "ok", "segv", "ok"]
    with StopSignals() as stop, Worker("bench.gpu_worker:CudaWork", (), stop, "gpu") as worker:
        start = time.perf_counter()
        meta = worker.start()
        print(json.dumps({"check": "worker_start", "seconds": round(time.perf_counter() - start, 2), **meta}),
              flush=True)
        for task in tasks:
            start = time.perf_counter()
            outcome = worker.run([task], timeout_s=120)
            print(json.dumps({"check": task, "outcome": outcome.status, "reason": outcome.reason[:200],
                              "records": outcome.records, "worker_starts": worker.starts,
                              "seconds": round(time.perf_counter() - start, 2)}), flush=True)


if __name__ == "__main__":
    main()
