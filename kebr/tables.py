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


def build_table(title: str, rows: list[dict[str, Any]], out_md: Path, out_csv: Path) -> None:
    """``rows``: each ``{"label", "metrics_files": [...], "paper_row", "paper": {...} | None}``."""
    md = [f"# {title}", "",
          "Mean±std over seeds; Acc-2 and F1 as Has0/Non0 (negative/non-negative, negative/positive), "
          "in percent like the paper. Runs are fine-tuning dataset / pretraining dataset / variant; `paper` "
          "columns: the published numbers of the paper row named (spec section 8).", "",
          "| run | seeds | " + " | ".join(COLUMNS) + " | paper row | paper Acc-2 | paper F1 | paper Acc-7 | paper MAE | paper Corr |",
          "|---" * (3 + len(COLUMNS) + len(PAPER_COLUMNS)) + "|"]
    records = []
    for row in rows:
        metrics = [json.loads(Path(p).read_text()) for p in row["metrics_files"]]
        stats = summarize(metrics)
        cells = _cells(stats)
        paper = row.get("paper") or {}
        paper_cells = [row["paper_row"]] + [str(paper.get(k, "-")) for k in PAPER_COLUMNS]
        md.append(f"| {row['label']} | {len(metrics)} | " + " | ".join(cells[c] for c in COLUMNS) + " | "
                  + " | ".join(paper_cells) + " |")
        record = {"run": row["label"], "seeds": len(metrics)}
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
