"""Tables: mean and std over seeds of each row's runs, beside the paper's numbers (Markdown + CSV),
and the paper's "Avg" column computed for our rows as the paper computes it for its own.

How we read the paper's "Avg" (Tables 2-4: "the average improvement across all metrics", Table 4:
"the Avg of C2-C5 is calculated relative to C1 as the benchmark"; section 4.5 calls it "the average
degradation rate of all the metrics"): the mean, over the seven numbers a row prints (Acc-2 Has0,
Acc-2 Non0, F1 Has0, F1 Non0, Acc-7, MAE, Corr), of each number's relative change against the same
number of the row it is measured against (kebr/variants.py ``avg_against``), in percent, with
MAE's sign turned so that a lower MAE counts as an improvement:

    Avg = 100 / 7 * sum_m (x_m - r_m) / r_m    (MAE: (r_m - x_m) / r_m)

where x is the row and r the row it names. The paper prints the magnitude with an up or down arrow;
we print it signed (the paper's "0.51% ↓" is -0.51%). Recomputed from the paper's printed rows this
gives each of its eight printed Avg values within the rounding of the numbers it is computed from,
except Table 2's MOSEI row (printed 1.37%, recomputed +1.43%); tests/test_paper_tables.py checks
every one, and the text's two further claims.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from kebr.metrics import format_has0_non0

COLUMNS = ("acc2", "f1", "acc7", "acc5", "acc3", "mae", "corr")
PAPER_COLUMNS = ("acc2", "f1", "acc7", "mae", "corr", "avg")  # what the paper prints
# The numbers the paper's Avg averages over, and the one of them where lower is better.
AVG_METRICS = ("acc2_has0", "acc2_non0", "f1_has0", "f1_non0", "acc7", "mae", "corr")
LOWER_IS_BETTER = frozenset({"mae"})
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


def average_improvement(row: Mapping[str, float], against: Mapping[str, float]) -> float | None:
    """The paper's "Avg" of ``row`` against the row ``against`` (module docstring), in percent: the
    mean relative change of AVG_METRICS, MAE's sign turned. Both in the same units (the paper's
    percent or our fractions: a relative change does not see the scale). None where a number of
    ``against`` is not positive (a Corr at or below 0), where a relative change means nothing."""
    if any(against[k] <= 0 for k in AVG_METRICS):
        return None
    changes = [(against[k] - row[k] if k in LOWER_IS_BETTER else row[k] - against[k]) / against[k]
               for k in AVG_METRICS]
    return 100 * sum(changes) / len(changes)


def paper_numbers(paper: Mapping[str, Any]) -> dict[str, float] | None:
    """A paper row (kebr/variants.py ``PAPER``) as AVG_METRICS, in its percent; None where it lacks one."""
    if not all(k in paper for k in ("acc2", "f1", "acc7", "mae", "corr")):
        return None
    acc2, f1 = (tuple(float(x) for x in str(paper[k]).split("/")) for k in ("acc2", "f1"))
    return {"acc2_has0": acc2[0], "acc2_non0": acc2[1], "f1_has0": f1[0], "f1_non0": f1[1],
            "acc7": float(paper["acc7"]), "mae": float(paper["mae"]), "corr": float(paper["corr"])}


def format_avg(value: float | None) -> str:
    return "-" if value is None else f"{value:+.2f}%"


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
    """``rows``: each ``{"label", "metrics_files": [...], "paper_row", "paper": {...} | None}`` and
    optionally ``avg_against`` (the label of the row its Avg is measured against), ``paper_notes``
    ({paper column: footnote}), ``corpus`` and ``g`` (kebr/variants.py ``table_rows``);
    ``header``: Markdown lines under the title (kebr/deviations.py ``table_header``: the recipe, deviations)."""
    md = [f"# {title}", "", *header, *([""] if header else []),
          "Mean±std over seeds; Acc-2 and F1 as Has0/Non0 (negative/non-negative, negative/positive), "
          "in percent like the paper. Runs are fine-tuning dataset / pretraining dataset / variant; `paper` "
          "columns: the published numbers of the paper row named (spec section 8). `test clips`: clips scored "
          "of the corpus's official test set (MOSI 686, MOSEI 4,659); the published numbers are comparable "
          "only when they are equal. `Avg`: the paper's average improvement, the mean relative change of "
          "Acc-2, F1 (Has0 and Non0), Acc-7, MAE (lower is better) and Corr against the run in `Avg against`, "
          "from our means over seeds; `paper Avg` is the paper's, signed (docs/training.md, \"The tables' Avg\").", "",
          "| run | seeds | test clips | " + " | ".join(COLUMNS) + " | Avg | Avg against"
          + " | paper row | paper Acc-2 | paper F1 | paper Acc-7 | paper MAE | paper Corr | paper Avg |",
          "|---" * (6 + len(COLUMNS) + len(PAPER_COLUMNS)) + "|"]
    metrics = {row["label"]: [json.loads(Path(p).read_text()) for p in row["metrics_files"]] for row in rows}
    stats = {label: summarize(m) for label, m in metrics.items()}
    means = {label: {k: mean for k, (mean, _) in s.items()} for label, s in stats.items()}
    notes: list[str] = []  # footnotes to paper cells, numbered in the order they first appear
    records = []
    for row in rows:
        label = row["label"]
        cells = _cells(stats[label])
        against = row.get("avg_against")
        if against is not None and against not in means:
            raise ValueError(f"row {label!r}: its Avg is against {against!r}, which is not a row of this table")
        avg = average_improvement(means[label], means[against]) if against else None
        paper = row.get("paper") or {}
        paper_cells = [row["paper_row"]]
        for k in PAPER_COLUMNS:
            value = paper.get(k)
            cell = "-" if value is None else f"{value:+g}%" if k == "avg" else str(value)
            note = (row.get("paper_notes") or {}).get(k)
            if note:
                notes += [note] if note not in notes else []
                cell += f" [{notes.index(note) + 1}]"
            paper_cells.append(cell)
        clips_cell, n_test, official = scored_test_clips(row, metrics[label])
        md.append(f"| {label} | {len(metrics[label])} | {clips_cell} | " + " | ".join(cells[c] for c in COLUMNS)
                  + f" | {format_avg(avg)} | {against or '-'} | " + " | ".join(paper_cells) + " |")
        record = {"run": label, "seeds": len(metrics[label]), "test_clips": n_test, "official_test_clips": official}
        record.update({k: row[k] for k in ("corpus", "g") if k in row})
        for key, (mean, std) in stats[label].items():
            record[f"{key}_mean"], record[f"{key}_std"] = mean, std
        record.update({"avg": "" if avg is None else avg, "avg_against": against or ""})
        record["paper_row"] = row["paper_row"]
        record.update({f"paper_{k}": paper.get(k, "") for k in PAPER_COLUMNS})
        records.append(record)
    if notes:
        md += ["", "Notes to the paper's numbers:"] + [f"[{i}] {note}" for i, note in enumerate(notes, 1)]
    out_md.parent.mkdir(parents=True, exist_ok=True)
    out_md.write_text("\n".join(md) + "\n")
    with out_csv.open("w", newline="") as f:
        writer = csv.DictWriter(f, list(records[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(records)
