"""A training run's curves: loss terms per epoch and per logged step, and the valid MAE."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from matplotlib.ticker import MaxNLocator

from kebr.plots.style import (
    GREYS,
    LINESTYLES,
    MARKERS,
    figure,
    note,
    save,
    series_style,
)

STEP_LOG = "steps.csv"


# Training curves -------------------------------------------------------------------------------------

def read_columns(path: Path) -> dict[str, np.ndarray]:
    """A CSV as float columns (empty cells and text become NaN)."""
    def number(value: str) -> float:
        try:
            return float(value)
        except ValueError:
            return math.nan

    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    return {k: np.array([number(r[k]) for r in rows]) for k in (rows[0] if rows else {})}


# (log column, panel title, y label)
TRAINING_PANELS = (
    ("l_task", "L_task (L1 of the task)", "L1 loss (label units)"),
    ("l_mcc", "L_mcc (unweighted)", "loss (unitless)"),
    ("cos_a", "cos_a: fused vs audio", "cosine (unitless)"),
    ("cos_v", "cos_v: fused vs video", "cosine (unitless)"),
    ("valid_mae", "valid MAE (selects the best epoch)", "MAE (label units, labels in [-3, 3])"),
)


def _step_positions(epochs: np.ndarray) -> np.ndarray:
    """x of logged steps on the epoch axis: the steps of epoch e spread evenly over (e - 1, e]."""
    x = np.empty(len(epochs))
    for e in np.unique(epochs):
        at = np.flatnonzero(epochs == e)
        x[at] = e - 1 + np.arange(1, len(at) + 1) / len(at)
    return x


def plot_training(run_dirs: Sequence[Path], prefix: Path, title: str) -> dict[str, Any]:
    """One figure for one training run or several seeds of one (overlaid, one line style each): the
    loss terms and modality cosines per epoch (and per logged step, thin, when the run has a
    steps.csv), valid MAE, and the learning rates. Returns the per-epoch columns drawn, per run."""
    logs = {d.name: read_columns(d / "log.csv") for d in run_dirs}
    steps = {d.name: read_columns(d / STEP_LOG) for d in run_dirs if (d / STEP_LOG).exists()}
    fig, axes = figure(2, 3, figsize=(13, 7))
    axes = axes.ravel()
    for ax, (column, panel, unit) in zip(axes, TRAINING_PANELS):
        drawn = False
        for i, (name, log) in enumerate(logs.items()):
            step = steps.get(name, {})
            if column in step and "epoch" in step:
                ax.plot(_step_positions(step["epoch"]), step[column], color=GREYS[i % len(GREYS)], linewidth=0.5,
                        alpha=0.6, label=f"{name} per step" if i == 0 else None)
            if column in log:
                ax.plot(log["epoch"], log[column], label=name, **series_style(i, max(1, len(log["epoch"]) // 20)))
                drawn = True
        if drawn:
            ax.set_title(panel)
            ax.set_xlabel("epoch")
            ax.set_ylabel(unit)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        else:
            ax.set_title(panel)
            note(ax, "not logged by this run" + (" (pretraining has no valid split)" if column == "valid_mae" else ""))
    ax = axes[len(TRAINING_PANELS)]
    lr_columns = sorted({k for log in logs.values() for k in log if k.startswith("lr_")})
    for j, column in enumerate(lr_columns):
        for i, log in enumerate(logs.values()):  # the schedule is the same for every seed: lines coincide
            ax.plot(log["epoch"], log[column], color=GREYS[j % len(GREYS)], linestyle=LINESTYLES[j % len(LINESTYLES)],
                    marker=MARKERS[j % len(MARKERS)], markersize=3, markevery=max(1, len(log["epoch"]) // 20),
                    label=column.removeprefix("lr_") if i == 0 else None)
    ax.set_title("learning rates (at the start of each epoch)")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("learning rate (log scale)")
    if lr_columns:
        ax.set_yscale("log")
        ax.legend(title="parameter group")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6), bbox_to_anchor=(0.5, -0.02))
    fig.suptitle(title + (" (thin lines: every logged step)" if steps else ""))
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    save(fig, prefix)
    return {name: {k: v.tolist() for k, v in log.items()} for name, log in logs.items()}
