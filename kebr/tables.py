"""Tables: mean and std over seeds of each row's runs, beside the paper's numbers (Markdown + CSV)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from kebr.metrics import format_has0_non0

COLUMNS = ("acc2", "f1", "acc7", "acc5", "acc3", "mae", "corr")
PAPER_COLUMNS = ("acc2", "f1", "acc7", "mae", "corr")  # what the paper prints
# The official test sets of the paper's fine-tuning corpora (CMU-MOSI and CMU-MOSEI standard splits).
# A run that scored fewer test clips is not comparable with the published numbers.
OFFICIAL_TEST_CLIPS = {"MOSI": 686, "MOSEI": 4659}


def scored_test_clips(row: dict[str, Any], metrics: Sequence[dict[str, Any]]) -> tuple[str, int | None, int | None]:
    """(cell, clips scored, official count) for a row: e.g. "686 of 686". A scored count that
    differs between seeds is shown as a range (it should not: every seed reads the same shards)."""
    scored = sorted({int(m["n_test"]) for m in metrics if "n_test" in m})
    official = OFFICIAL_TEST_CLIPS.get(str(row.get("paper_row", "")).split(" / ")[0])
    if not scored:
        return "-", None, official
    shown = str(scored[0]) if len(scored) == 1 else f"{scored[0]}-{scored[-1]}"
    return (f"{shown} of {official}" if official else shown), scored[0], official


def summarize(metrics: Sequence[dict[str, float]]) -> dict[str, tuple[float, float]]:
    """(mean, std) over seeds of every metric; accuracies stay fractions."""
    keys = metrics[0].keys()
    return {k: (float(np.mean([m[k] for m in metrics])), float(np.std([m[k] for m in metrics])))
            for k in keys if isinstance(metrics[0][k], (int, float))}


def _cells(s: dict[str, tuple[float, float]]) -> dict[str, str]:
    """Our numbers as the paper prints them: Acc/F1 'Has0/Non0' percent, Acc-7 percent, MAE, Corr."""
    pct = lambda k: f"{100 * s[k][0]:.2f}±{100 * s[k][1]:.2f}"  # noqa: E731
    return {
        "acc2": format_has0_non0(s["acc2_has0"][0], s["acc2_non0"][0]),
        "f1": format_has0_non0(s["f1_has0"][0], s["f1_non0"][0]),
        "acc7": pct("acc7"), "acc5": pct("acc5"), "acc3": pct("acc3"),
        "mae": f"{s['mae'][0]:.3f}±{s['mae'][1]:.3f}", "corr": f"{s['corr'][0]:.3f}±{s['corr'][1]:.3f}",
    }


def build_table(title: str, rows: list[dict[str, Any]], out_md: Path, out_csv: Path,
                header: Sequence[str] = ()) -> None:
    """``rows``: each ``{"label", "metrics_files": [...], "paper_row", "paper": {...} | None}``;
    ``header``: Markdown lines under the title (kebr/recipe.py ``table_header``: the recipe, deviations)."""
    md = [f"# {title}", "", *header, *([""] if header else []),
          "Mean±std over seeds; Acc-2 and F1 as Has0/Non0 (negative/non-negative, negative/positive), "
          "in percent like the paper. Runs are fine-tuning dataset / pretraining dataset / variant; `paper` "
          "columns: the published numbers of the paper row named (spec section 8). `test clips`: clips scored "
          "of the corpus's official test set (MOSI 686, MOSEI 4,659); the published numbers are comparable "
          "only when they are equal.", "",
          "| run | seeds | test clips | " + " | ".join(COLUMNS)
          + " | paper row | paper Acc-2 | paper F1 | paper Acc-7 | paper MAE | paper Corr |",
          "|---" * (4 + len(COLUMNS) + len(PAPER_COLUMNS)) + "|"]
    records = []
    for row in rows:
        metrics = [json.loads(Path(p).read_text()) for p in row["metrics_files"]]
        stats = summarize(metrics)
        cells = _cells(stats)
        paper = row.get("paper") or {}
        paper_cells = [row["paper_row"]] + [str(paper.get(k, "-")) for k in PAPER_COLUMNS]
        clips_cell, n_test, official = scored_test_clips(row, metrics)
        md.append(f"| {row['label']} | {len(metrics)} | {clips_cell} | " + " | ".join(cells[c] for c in COLUMNS)
                  + " | " + " | ".join(paper_cells) + " |")
        record = {"run": row["label"], "seeds": len(metrics), "test_clips": n_test, "official_test_clips": official}
        for key, (mean, std) in stats.items():
            record[f"{key}_mean"], record[f"{key}_std"] = mean, std
        record["paper_row"] = row["paper_row"]
        record.update({f"paper_{k}": paper.get(k, "") for k in PAPER_COLUMNS})
        records.append(record)
    out_md.parent.mkdir(parents=True, exist_ok=True)
    out_md.write_text("\n".join(md) + "\n")
    with out_csv.open("w", newline="") as f:
        writer = csv.DictWriter(f, list(records[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(records)
