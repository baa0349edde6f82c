"""What every figure shares: greys, line styles and hatches that read in greyscale, and one way to save."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402

# Greys, line styles and markers, cycled together: series stay apart without colour.
GREYS = ("0.0", "0.45", "0.2", "0.6", "0.3", "0.75")
LINESTYLES = ("-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 3)))
MARKERS = ("o", "s", "^", "D", "v", "x")
OURS = {"color": "0.35", "edgecolor": "black", "linewidth": 0.6}
PAPER_BAR_STYLE = {"color": "white", "edgecolor": "black", "hatch": "////", "linewidth": 0.6}
SKIPPED = {"color": "white", "edgecolor": "black", "hatch": "\\\\\\\\", "linewidth": 0.6}
STYLE = {
    "font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8,
    "axes.grid": True, "grid.color": "0.88", "grid.linewidth": 0.6, "axes.axisbelow": True,
    "axes.spines.top": False, "axes.spines.right": False, "legend.frameon": False,
    "hatch.linewidth": 0.6, "savefig.dpi": 150, "savefig.bbox": "tight",
    "svg.fonttype": "none",  # text stays text: searchable, and small files
    "svg.hashsalt": "kebr",  # stable element ids: the same data gives the same SVG
}
MAX_REASON_BARS = 14  # more skip reasons than this are summed into one "other reasons" bar


def series_style(i: int, markevery: int | None = None) -> dict[str, Any]:
    """Line style number ``i``: grey, dash pattern and marker all change, so greyscale keeps them apart."""
    return {"color": GREYS[i % len(GREYS)], "linestyle": LINESTYLES[i % len(LINESTYLES)],
            "marker": MARKERS[i % len(MARKERS)], "markersize": 3.5, "linewidth": 1.2, "markevery": markevery}


def save(fig: plt.Figure, prefix: Path) -> list[Path]:
    """Write ``prefix``.png and ``prefix``.svg, without timestamps (same data, same files)."""
    prefix.parent.mkdir(parents=True, exist_ok=True)
    paths = [prefix.with_name(prefix.name + ".png"), prefix.with_name(prefix.name + ".svg")]
    fig.savefig(paths[0], metadata={"Software": None})
    fig.savefig(paths[1], metadata={"Date": None, "Creator": None})
    plt.close(fig)
    return paths


def figure(*args: Any, **kwargs: Any) -> tuple[plt.Figure, Any]:
    plt.rcParams.update(STYLE)  # read while drawing and saving, not only when the figure is made
    return plt.subplots(*args, **kwargs)


def note(ax: Any, text: str) -> None:
    """A panel that has nothing to draw says why."""
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=8, wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
