"""``kebr status results/``: how far a running or finished corpus has got, from its files alone.

Per dataset (every ``results/<dataset>/`` with a ``plan/``): shards and clips planned; for each
per-shard stage the shards done (its output exists, or the shard is already assembled), running (a journal exists: with the clips it has
finished) and to do; clips ok and skipped by kind over the assembled shards (their status tables)
and, for the running stages, over what their journals hold. Reads only small files and the
journals of running stages, so it is cheap to run while the DAG runs.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from kebr import paths
from kebr.journal import read_journal_counts
from kebr.stages.assemble import read_status
from kebr.tsv import counted_rows


def dataset_status(results: Path, dataset: str) -> dict[str, Any]:
    """How far one dataset under ``results`` has got (the module docstring says what is counted)."""
    shards = paths.planned_shards(results, dataset)
    assembled = {s for s in shards if Path(paths.status(results, dataset, s)).exists()
                 and Path(paths.shard(results, dataset, s)).exists()}
    status: dict[str, Any] = {"shards": len(shards),
                              "clips": sum(counted_rows(Path(paths.plan(results, dataset, s))) for s in shards),
                              "stages": {}}
    for stage in paths.STAGE_OUTPUTS:
        done = running = 0
        journaled: Counter[str] = Counter()
        for shard in shards:
            out = Path(paths.stage_output(results, dataset, stage, shard))
            journal = out.with_name(out.name + ".journal")
            if out.exists() or shard in assembled:
                done += 1
            elif journal.exists():
                running += 1
                journaled.update(read_journal_counts(journal))
        status["stages"][stage] = {"done": done, "running": running, "todo": len(shards) - done - running,
                                   "running_clips": {"ok": journaled.pop("", 0), "skipped": dict(journaled)}}
    status["stages"]["assemble"] = {"done": len(assembled), "running": 0, "todo": len(shards) - len(assembled)}
    kinds: Counter[tuple[str, str]] = Counter()
    missing: Counter[str] = Counter()
    for shard in sorted(assembled):
        for row in read_status(Path(paths.status(results, dataset, shard))):
            kinds[(row["status"], row["kind"])] += 1
            if row["missing"]:
                missing[row["missing"]] += 1
    status["assembled_clips"] = {
        "ok": sum(n for (s, _), n in kinds.items() if s == "ok"),
        "ok_missing_modality": dict(missing),
        "skipped": {k: n for (s, k), n in sorted(kinds.items(), key=lambda kv: -kv[1]) if s == "skipped"},
    }
    status["report"] = Path(paths.clips(results, dataset)).exists()
    return status


def corpus_status(results: Path) -> dict[str, Any]:
    """Status of every dataset under ``results``."""
    results = Path(results)
    if not results.is_dir():
        raise FileNotFoundError(f"no results folder {results}")
    return {p.name: dataset_status(results, p.name) for p in sorted(results.iterdir())
            if Path(paths.plan_dir(results, p.name)).is_dir()}


def format_status(status: dict[str, Any]) -> str:
    if not status:
        return "no planned dataset yet (no results/<dataset>/plan/)"
    lines = []
    for name, ds in status.items():
        lines.append(f"{name}: {ds['shards']} shards, {ds['clips']} clips planned"
                     + ("; clips.tsv written" if ds["report"] else ""))
        lines.append(f"  {'stage':<9} {'done':>6} {'running':>8} {'to do':>6}   clips journaled by running jobs")
        for stage, s in ds["stages"].items():
            running = s.get("running_clips")
            detail = ""
            if running and (running["ok"] or running["skipped"]):
                skipped = ", ".join(f"{k} {n}" for k, n in sorted(running["skipped"].items(), key=lambda kv: -kv[1]))
                detail = f"{running['ok']} ok" + (f", skipped: {skipped}" if skipped else "")
            lines.append(f"  {stage:<9} {s['done']:>6} {s['running']:>8} {s['todo']:>6}   {detail}")
        clips = ds["assembled_clips"]
        skipped = clips["skipped"]
        lines.append(f"  assembled shards: {clips['ok']} clips ok, {sum(skipped.values())} skipped"
                     + (": " + ", ".join(f"{k} {n}" for k, n in skipped.items()) if skipped else ""))
        if clips["ok_missing_modality"]:
            lines.append("  ok with a missing modality (labelled valid/test): "
                         + ", ".join(f"{k} {n}" for k, n in clips["ok_missing_modality"].items()))
    return "\n".join(lines)
