"""A table beside the paper's numbers, and the g sweep beside the paper's Fig. 4."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from kebr.plots.html import markdown_html, write_text
from kebr.plots.style import OURS, PAPER_BAR_STYLE, figure, note, save, series_style
from kebr.variants import G_SWEEPS, SWEEP_CORPORA

# Tables and the g sweep -----------------------------------------------------------------------------

# (our CSV column, panel title, x label, scale to the paper's units, paper CSV column, part of "Has0/Non0")
TABLE_PANELS = (
    ("acc2_has0", "Acc-2 Has0", "accuracy (%)", 100, "paper_acc2", 0),
    ("acc2_non0", "Acc-2 Non0", "accuracy (%)", 100, "paper_acc2", 1),
    ("f1_has0", "F1 Has0", "weighted F1 (%)", 100, "paper_f1", 0),
    ("f1_non0", "F1 Non0", "weighted F1 (%)", 100, "paper_f1", 1),
    ("acc7", "Acc-7", "accuracy (%)", 100, "paper_acc7", None),
    ("mae", "MAE", "MAE (label units)", 1, "paper_mae", None),
    ("corr", "Corr", "Pearson r (unitless)", 1, "paper_corr", None),
)


def read_table(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def paper_value(cell: str, part: int | None) -> float | None:
    """A paper cell as a number: '84.4/87.2' part 0 -> 84.4; '' (the paper gives none) -> None."""
    if not cell:
        return None
    return float(cell.split("/")[part] if part is not None else cell)


def plot_table(table_csv: Path, prefix: Path, title: str) -> dict[str, Any]:
    """One panel per metric, one pair of bars per row: ours (mean, error bar = std over seeds, solid)
    and the paper's (hatched; absent where the paper prints no number)."""
    rows = read_table(table_csv)
    fig, axes = figure(1, len(TABLE_PANELS), figsize=(2.2 * len(TABLE_PANELS) + 2.5, 1.6 + 0.75 * len(rows)),
                        sharey=True)
    y = np.arange(len(rows))
    drawn: dict[str, Any] = {}
    for ax, (key, panel, unit, scale, paper_key, part) in zip(axes, TABLE_PANELS):
        ours = np.array([float(r[f"{key}_mean"]) * scale for r in rows])
        spread = np.array([float(r[f"{key}_std"]) * scale for r in rows])
        paper = [paper_value(r.get(paper_key, ""), part) for r in rows]
        ax.barh(y - 0.2, ours, height=0.38, xerr=spread, capsize=2, label="ours: mean ± std over seeds", **OURS)
        have = [i for i, p in enumerate(paper) if p is not None]
        ax.barh(y[have] + 0.2, [paper[i] for i in have], height=0.38, label="paper", **PAPER_BAR_STYLE)
        for i in set(range(len(rows))) - set(have):
            ax.annotate("no paper value", (0, y[i] + 0.2), xytext=(2, 0), textcoords="offset points", va="center",
                        fontsize=6)
        ax.set_title(panel)
        ax.set_xlabel(unit)
        if key == "corr":
            ax.axvline(0, color="black", linewidth=0.6)
        drawn[key] = {"ours": ours.tolist(), "std": spread.tolist(), "paper": paper}
    axes[0].set_yticks(y, [f"{r['run']}\n(paper: {r['paper_row']}; {r['seeds']} seeds)" for r in rows], fontsize=7)
    axes[0].invert_yaxis()
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, bbox_to_anchor=(0.5, -0.02))
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    save(fig, prefix)
    return drawn


# The paper's Fig. 4 statement (spec section 8): F1 is high and stable for g in this range.
PAPER_STABLE_G = (-0.05, 0.25)
GSWEEP_LINES = (("acc2_has0", "Acc-2 Has0"), ("acc2_non0", "Acc-2 Non0"), ("f1_has0", "F1 Has0"),
                ("f1_non0", "F1 Non0"))


def plot_gsweep(table_csv: Path, prefix: Path, title: str) -> dict[str, Any]:
    """The paper's Fig. 4, one row of panels per corpus it draws (MOSI, MOSEI): Acc-2 and F1, and MAE,
    against the fine-tuning MCC angle penalty g, mean ± std over seeds, with the range the paper calls
    high and stable shaded. The g of each row and its corpus are the table's ``g`` and ``corpus``
    columns. A corpus with no row in the table (the config has no dataset playing it; the demo has
    MOSI only) is drawn as a panel saying "no runs". The paper prints no numbers for Fig. 4 (only the
    ranges of section 4.6), so only ours are drawn. Returns, per corpus, the numbers drawn (None for
    a corpus without runs)."""
    rows = read_table(table_csv)
    if rows and not {"g", "corpus"} <= set(rows[0]):
        raise ValueError(f"{table_csv} has no g and corpus columns: rebuild the table (`kebr table`)")
    corpora = [c.upper() for c in SWEEP_CORPORA]
    fig, axes = figure(len(corpora), 2, figsize=(11, 3.6 * len(corpora)), gridspec_kw={"width_ratios": [1.6, 1]},
                        squeeze=False)
    drawn: dict[str, Any] = {}
    legend: tuple[list[Any], list[str]] = ([], [])
    for (left, right), corpus in zip(axes, corpora):
        own = sorted((r for r in rows if r["corpus"] == corpus), key=lambda r: float(r["g"]))
        if not own:
            for ax, what in ((left, "Acc-2 and F1"), (right, "MAE")):
                ax.set_title(f"{corpus}: {what} against g")
                note(ax, f"{corpus}: no runs\n(this table has no {corpus} rows:\nno dataset of the config plays {corpus})")
            drawn[corpus] = None
            continue
        g = np.array([float(r["g"]) for r in own])
        for ax in (left, right):
            ax.axvspan(*PAPER_STABLE_G, color="0.9", zorder=0, label="paper: F1 high and stable")
        lines: dict[str, Any] = {"g": g.tolist(), "seeds": sorted({r["seeds"] for r in own})}
        for i, (key, label) in enumerate(GSWEEP_LINES):
            mean = np.array([100 * float(r[f"{key}_mean"]) for r in own])
            std = np.array([100 * float(r[f"{key}_std"]) for r in own])
            left.errorbar(g, mean, yerr=std, capsize=2.5, label=label, **series_style(i))
            lines[key] = {"mean": mean.tolist(), "std": std.tolist()}
        mae = np.array([float(r["mae_mean"]) for r in own])
        mae_std = np.array([float(r["mae_std"]) for r in own])
        right.errorbar(g, mae, yerr=mae_std, capsize=2.5, label="MAE", **series_style(len(GSWEEP_LINES)))
        lines["mae"] = {"mean": mae.tolist(), "std": mae_std.tolist()}
        left.set_title(f"{corpus}: Acc-2 and F1 against g ({'/'.join(lines['seeds'])} seeds)")
        left.set_ylabel("score (%)")
        right.set_title(f"{corpus}: MAE against g")
        right.set_ylabel("MAE (label units)")
        for ax in (left, right):
            ax.set_xlabel("g, fine-tuning MCC angle penalty (unitless)")
        if not legend[0]:
            handles, labels = left.get_legend_handles_labels()
            more, more_labels = right.get_legend_handles_labels()
            legend = (handles + more[1:], labels + more_labels[1:])
        drawn[corpus] = lines
    if legend[0]:
        fig.legend(*legend, loc="lower center", ncol=6, bbox_to_anchor=(0.5, -0.01))
    fig.suptitle(f"{title}: mean ± std over seeds (the paper's Fig. 4 draws F1 on MOSI and MOSEI)")
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    save(fig, prefix)
    return drawn


def table_figures(name: str, config: dict[str, Any], table_md: Path, table_csv: Path, prefix: Path) -> list[Path]:
    """``prefix``.png/.svg (a table beside the paper's numbers, or for a g sweep the paper's Fig. 4)
    and ``prefix``.html (the table itself)."""
    title = next((line[2:] for line in table_md.read_text().splitlines() if line.startswith("# ")), name)

    if name in G_SWEEPS:
        plot_gsweep(table_csv, prefix, title)
    else:
        plot_table(table_csv, prefix, title)
    html_path = write_text(prefix.with_name(prefix.name + ".html"), markdown_html(table_md.read_text()))
    return [prefix.with_name(prefix.name + s) for s in (".png", ".svg")] + [html_path]
