"""Per-clip progress journal: what a killed stage has finished survives for its restart.

Each per-shard stage appends one JSON line per finished clip (result or skip reason) and flushes it.
When the job is killed (SIGKILL, preemption, OOM) and Snakemake reruns it, the stage reads the
journal, skips the clips already in it and appends the rest. A line cut off by the kill is the last
line and is ignored. Arrays travel base64-encoded, so the journal needs nothing but the standard
library to read. The journal sits beside the stage's output under a name Snakemake does not own,
so Snakemake's clean-up of incomplete outputs leaves it alone; the stage deletes it once its real
output is written.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import numpy as np


def encode_array(array: np.ndarray) -> dict[str, Any]:
    array = np.ascontiguousarray(array, dtype=np.float32)
    return {"shape": list(array.shape), "b64": base64.b64encode(array.tobytes()).decode("ascii")}


def decode_array(data: dict[str, Any]) -> np.ndarray:
    return np.frombuffer(base64.b64decode(data["b64"]), dtype=np.float32).reshape(data["shape"]).copy()


class Journal:
    """Append-only JSON-lines file of per-clip records keyed by ``clip_id``."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.records: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            lines = self.path.read_text(encoding="utf-8").split("\n")
            for i, line in enumerate(lines):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    if i >= len(lines) - 2:  # the line a kill cut short
                        break
                    raise
                self.records[record["clip_id"]] = record
            # Rewrite without a torn tail so new lines start on a clean line.
            self._rewrite()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8")

    def _rewrite(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        with tmp.open("w", encoding="utf-8") as f:
            for record in self.records.values():
                f.write(json.dumps(record) + "\n")
        tmp.replace(self.path)

    def __contains__(self, clip_id: str) -> bool:
        return clip_id in self.records

    def append(self, record: dict[str, Any]) -> None:
        self.records[record["clip_id"]] = record
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()

    def remove(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)


def write_stage_output(path: str | Path, meta: dict[str, Any], records: list[dict[str, Any]]) -> Path:
    """A finished stage's output: a ``{"meta": ...}`` line, then one record per clip, atomically."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(json.dumps({"meta": meta}) + "\n")
        for record in records:
            f.write(json.dumps(record) + "\n")
    tmp.replace(path)
    return path


def read_stage_output(path: str | Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(meta, records by clip id) of a file written by ``write_stage_output``."""
    with Path(path).open(encoding="utf-8") as f:
        meta = json.loads(f.readline())["meta"]
        records = {r["clip_id"]: r for r in map(json.loads, f) if r}
    return meta, records
