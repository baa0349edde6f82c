"""clips.tsv (every planned clip with its status) and clips_summary.tsv (clips per status and kind)."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

from kebr.ingest import (  # readable: reasons name files; a non-UTF-8 name is spelled \xNN in UTF-8 tables
    read_clip_table,
)
from kebr.tsv import write_table

log = logging.getLogger("kebr")
from kebr.stages.assemble import read_status, write_status

SUMMARY_FIELDS = ["dataset", "status", "kind", "clips", "example_reason"]


def clips_summary_rows(rows: list[dict[str, str]], dataset: str) -> list[dict[str, Any]]:
    """clips_summary.tsv rows: clips per (status, kind), most first, each with one example reason."""
    counts = Counter((r["status"], r["kind"]) for r in rows)
    example: dict[tuple[str, str], str] = {}
    for r in rows:
        example.setdefault((r["status"], r["kind"]), r["reason"])
    order = sorted(counts, key=lambda key: (key[0] != "ok", -counts[key], key[1]))
    return [{"dataset": dataset, "status": s, "kind": k, "clips": counts[(s, k)], "example_reason": example[(s, k)]}
            for s, k in order]


def write_report(plan_tables: list[Path], status_tables: list[Path], out: Path, dataset: str,
                 summary: Path | None = None) -> dict[str, int]:
    """``clips.tsv``: every planned clip with its status; ``clips_summary.tsv`` (``summary``, by
    default beside it): counts per status and kind. A planned clip with no status is an error, not
    a silent loss."""
    tables = [read_status(path) for path in status_tables]
    status = {row["clip_id"]: row for table in tables for row in table}
    rows, counts = [], {"ok": 0, "skipped": 0}
    for path in plan_tables:
        for clip in read_clip_table(path):
            if clip.clip_id not in status:
                raise RuntimeError(f"clip {clip.clip_id} of shard {clip.shard} has no status: rerun its shard")
            if status[clip.clip_id]["shard"] != clip.shard:
                raise RuntimeError(f"clip {clip.clip_id} of shard {clip.shard} has the status of shard "
                                   f"{status[clip.clip_id]['shard']}: rerun both shards' assemble")
            rows.append(status[clip.clip_id])
            counts[status[clip.clip_id]["status"]] += 1
    if sum(map(len, tables)) != len(rows):  # a status row of no planned clip (or twice): a stale or damaged table
        raise RuntimeError(f"the status tables hold {sum(map(len, tables))} rows for the plan's {len(rows)} clips: "
                           "rerun the assemble of the shards whose plan changed")
    write_table(summary or out.with_name("clips_summary.tsv"), SUMMARY_FIELDS, clips_summary_rows(rows, dataset))
    write_status(rows, out)
    return counts
