"""Figures people look at: what happened to the clips, what the features look like, how training went,
and the paper's tables and Fig. 4 beside our numbers. The Snakemake report (rules/report.smk) shows them.

Every figure is written twice from one drawing, ``<prefix>.png`` (the report, the README) and
``<prefix>.svg`` (print; its text stays text), in greys with line styles, markers and hatches so that
it reads on a greyscale printout, and every axis names its unit. A figure draws what the files hold
and says so where something is missing (a pretraining run has no valid split; a clips.tsv without
``duration_s`` has no clip durations): nothing is estimated or filled in.

What each figure reads:
- clips, durations: ``clips.tsv`` (clip_id, status, reason, shard; ``kind``, ``missing`` and
  ``duration_s`` when the stages write them); without ``duration_s`` the durations figure shows the
  seconds of features the shards hold per clip instead, and says so;
- features: the dataset's HDF5 shards (``kebr.shards``): per-column mean and std over real frames,
  and per clip the share of sampled frames with a face (the ``face_present`` column);
- training: a run's ``log.csv`` (one row per epoch, ``kebr.train.loop.fit``) and, when the run writes
  one, ``steps.csv`` (one row per logged step: ``epoch`` and any of the loss terms);
- tables: a table's CSV (``kebr.tables.build_table``); a g sweep's rows carry their ``corpus`` and ``g``.

Each ``plot_*`` function returns the numbers it drew, so tests compare them with the files they
came from.
"""

from __future__ import annotations

import csv
import html
import json
import math
import re
from collections import Counter
from pathlib import Path
from typing import Any, Iterator, Sequence

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from kebr.clips import read_kind
from kebr.experiments import shard_paths
from kebr.variants import G_SWEEPS, SWEEP_CORPORA

STEP_LOG = "steps.csv"
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


def _figure(*args: Any, **kwargs: Any) -> tuple[plt.Figure, Any]:
    plt.rcParams.update(STYLE)  # read while drawing and saving, not only when the figure is made
    return plt.subplots(*args, **kwargs)


def _note(ax: Any, text: str) -> None:
    """A panel that has nothing to draw says why."""
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=8, wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)


# Clips: what happened to every input clip ---------------------------------------------------------

_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?")


def reason_group(reason: str) -> str:
    """A skip reason without its clip-specific detail, so that equal causes share a bar:
    'media: zero-byte file: /x/1.mp4' -> 'media: zero-byte file';
    'audio: silent (peak amplitude 1.0e-05, below -80 dBFS)' -> 'audio: silent'; numbers become N."""
    stage, sep, rest = reason.strip().partition(": ")
    head = re.split(r"[:(\[]", rest, maxsplit=1)[0].strip() if sep else stage
    head = _NUMBER.sub("N", head)
    return f"{stage}: {head}" if sep else head


def _read_tsv(path: Path) -> Iterator[dict[str, str]]:
    with path.open(newline="") as f:
        yield from csv.DictReader(f, delimiter="\t")


def summarize_clips(clips_tsv: Path) -> dict[str, Any]:
    """One pass over clips.tsv: clips per (status, kind, reason group) and the clip durations by status.

    ``kind`` is "" where clips.tsv has no ``kind`` column; ``durations`` is None without a
    ``duration_s`` column, and clips whose duration is empty are counted in ``no_duration``."""
    counts: Counter[tuple[str, str, str]] = Counter()
    durations: dict[str, list[float]] = {}
    has_duration, no_duration = False, 0
    for row in _read_tsv(clips_tsv):
        status = row["status"]
        # an ok clip may lack a modality (clips.tsv `missing`, when written): its own bar
        missing = f"missing {row['missing']}" if row.get("missing") else ""
        group = reason_group(row["reason"]) if row["reason"] else missing
        kind = read_kind(row["kind"], f"{clips_tsv}: clip {row['clip_id']!r}") if row.get("kind") else ""
        counts[(status, kind, group)] += 1
        if "duration_s" in row:
            has_duration = True
            try:
                value = float(row["duration_s"])
            except (TypeError, ValueError):
                value = math.nan
            if math.isfinite(value):
                durations.setdefault(status, []).append(value)
            else:
                no_duration += 1
    return {"counts": counts, "total": sum(counts.values()),
            "durations": durations if has_duration else None, "no_duration": no_duration}


def _clip_bars(counts: Counter[tuple[str, str, str]]) -> list[tuple[str, str, int]]:
    """(status, label, clips) per bar: ok groups first, then the other statuses by count, the tail
    of rare causes summed into one bar. Where clips.tsv names a skip's ``kind`` the bar is the kind
    (e.g. not_english, whatever language was heard), labelled with its most common reason."""
    merged: dict[tuple[str, str, str], Counter[str]] = {}  # (status, kind, reason group if no kind)
    for (status, kind, group), n in counts.items():
        merged.setdefault((status, kind, "" if kind else group), Counter())[group] += n

    def label(status: str, kind: str, groups: Counter[str]) -> str:
        group, _ = groups.most_common(1)[0]
        if kind:
            text = f"{kind}: {'e.g. ' if len(groups) > 1 else ''}{group}" if group else kind
        else:
            text = group
        if status == "ok":
            return "ok" + (f": {text}" if text else "")
        return text if status == "skipped" or text.startswith(status) else f"{status}: {text}"

    bars = [(status, label(status, kind, groups), sum(groups.values())) for (status, kind, _), groups in merged.items()]
    ok = sorted((b for b in bars if b[0] == "ok"), key=lambda b: -b[2])
    rest = sorted((b for b in bars if b[0] != "ok"), key=lambda b: (-b[2], b[1]))
    if len(rest) > MAX_REASON_BARS:
        tail = rest[MAX_REASON_BARS - 1:]
        rest = rest[:MAX_REASON_BARS - 1] + [("skipped", f"{len(tail)} other causes", sum(b[2] for b in tail))]
    return ok + rest


def plot_clips(summary: dict[str, Any], prefix: Path, dataset: str) -> list[tuple[str, str, int]]:
    """Horizontal bars: clips ok, and skipped by reason; each bar names its count and share."""
    bars = _clip_bars(summary["counts"])
    total = summary["total"]
    fig, ax = _figure(figsize=(8.5, 1.2 + 0.32 * max(len(bars), 1)))
    y = np.arange(len(bars))
    for i, (status, _, n) in enumerate(bars):
        ax.barh(y[i], n, height=0.7, **(OURS if status == "ok" else SKIPPED))
        ax.annotate(f"{n:,} ({100 * n / total:.1f} %)", (n, y[i]), xytext=(3, 0), textcoords="offset points",
                    va="center", fontsize=8)
    ax.set_yticks(y, [b[1] for b in bars])
    ax.invert_yaxis()
    ax.set_xlabel("clips (count)")
    ax.set_xlim(0, max([b[2] for b in bars] + [1]) * 1.25)
    ok = sum(n for (s, _, _), n in summary["counts"].items() if s == "ok")
    ax.set_title(f"{dataset}: {total:,} input clips, {ok:,} ok, {total - ok:,} not ok (solid: ok, hatched: skipped)")
    save(fig, prefix)
    return bars


def clip_lengths_from_shards(shards: Sequence[Path]) -> dict[str, np.ndarray]:
    """Seconds of audio and of video features each ok clip holds in the shards (capped at the
    stages' max_frames), for a clips.tsv that records no durations."""
    import h5py

    from kebr.shards import read_attrs  # imports torch: only these figures pay for it

    seconds: dict[str, list[np.ndarray]] = {"audio": [], "visual": []}
    for path in shards:
        features = json.loads(read_attrs(path)["feature_config"])
        frame_s = {"audio": features["audio"]["hop_length"] / features["audio"]["sample_rate"],
                   "visual": 1.0 / features["visual"]["fps"]}
        with h5py.File(path, "r") as f:
            for modality in seconds:
                seconds[modality].append(f[f"{modality}/lengths"][:] * frame_s[modality])
    return {m: np.concatenate(v) if v else np.zeros(0) for m, v in seconds.items()}


def plot_durations(summary: dict[str, Any], shards: Sequence[Path], prefix: Path, dataset: str) -> dict[str, Any]:
    """Histogram of clip durations (ok and not ok stacked), from clips.tsv's ``duration_s``; without
    it, the seconds of audio and video features the shards hold per ok clip, titled as such."""
    fig, ax = _figure(figsize=(8.5, 3.6))
    if summary["durations"] is not None:
        groups = {"ok": np.asarray(summary["durations"].get("ok", []), float),
                  "not ok": np.asarray([v for s, vs in summary["durations"].items() if s != "ok" for v in vs], float)}
        values = np.concatenate(list(groups.values()))
        bins = np.histogram_bin_edges(values, bins=min(50, max(5, int(np.sqrt(len(values)))))) if len(values) else 10
        ax.hist(list(groups.values()), bins=bins, stacked=True, label=[f"{k} ({len(v):,})" for k, v in groups.items()],
                color=[OURS["color"], "white"], edgecolor="black", linewidth=0.5, hatch=[None, SKIPPED["hatch"]])
        ax.set_xlabel("clip duration (s)")
        missing = f"; {summary['no_duration']:,} clips without a duration_s" if summary["no_duration"] else ""
        ax.set_title(f"{dataset}: clip durations from clips.tsv{missing}")
        drawn = {"source": "clips.tsv", **{k: v.tolist() for k, v in groups.items()}}
    else:
        lengths = clip_lengths_from_shards(shards)
        values = np.concatenate(list(lengths.values()))
        bins = np.histogram_bin_edges(values, bins=30) if len(values) else 10
        for i, (modality, secs) in enumerate(lengths.items()):
            ax.hist(secs, bins=bins, histtype="step", linewidth=1.4, color=GREYS[i], linestyle=LINESTYLES[i],
                    label=f"{modality} features ({len(secs):,} clips)")
        ax.set_xlabel("seconds of features per clip (s; capped at the stages' max_frames)")
        ax.set_title(f"{dataset}: clips.tsv records no durations; the feature seconds of each ok clip in the shards")
        drawn = {"source": "shards", **{k: v.tolist() for k, v in lengths.items()}}
    ax.set_ylabel("clips (count)")
    ax.legend()
    save(fig, prefix)
    return drawn


# Features: per-column distributions per modality ---------------------------------------------------

def feature_stats(shards: Sequence[Path], max_shards: int) -> dict[str, Any]:
    """Per modality: column names and per-column mean and std over every real (unpadded) frame of
    up to ``max_shards`` shards spread evenly over the dataset; per clip, the share of its sampled
    frames with a face (when the visual features have a ``face_present`` column)."""
    import h5py

    from kebr.shards import read_attrs  # imports torch: only these figures pay for it

    if not shards:
        raise ValueError("no shards to read features from")
    spread = np.linspace(0, len(shards) - 1, min(max_shards, len(shards)))
    picked = [shards[i] for i in sorted({round(x) for x in spread})]
    attrs = read_attrs(picked[0])
    stats: dict[str, Any] = {"shards_read": len(picked), "shards": len(shards), "clips": 0, "face_share": [],
                             "clips_without_frames": 0}
    sums: dict[str, np.ndarray] = {}
    for path in picked:
        with h5py.File(path, "r") as f:
            stats["clips"] += len(f["id"])
            for modality in ("audio", "visual"):
                x = f[f"{modality}/features"][:].astype(np.float64)
                lengths = f[f"{modality}/lengths"][:]
                real = np.arange(x.shape[1])[None, :] < lengths[:, None]  # (N, T) frame mask
                frames = x[real]  # (frames, d)
                acc = sums.setdefault(modality, np.zeros((3, x.shape[2])))
                acc += [np.full(x.shape[2], len(frames)), frames.sum(0), (frames ** 2).sum(0)]
                if modality == "visual" and "face_present" in attrs["visual_columns"]:
                    face = x[:, :, attrs["visual_columns"].index("face_present")]
                    for row, n in zip(face, lengths):
                        if n:
                            stats["face_share"].append(float(row[:n].mean()))
                        else:
                            stats["clips_without_frames"] += 1
    for modality, (n, s, ss) in sums.items():
        mean = s / np.maximum(n, 1)
        std = np.sqrt(np.maximum(ss / np.maximum(n, 1) - mean ** 2, 0))
        stats[modality] = {"columns": attrs[f"{modality}_columns"], "mean": mean, "std": std, "frames": int(n[0])}
    stats["has_face_column"] = "face_present" in attrs["visual_columns"]
    return stats


def plot_features(stats: dict[str, Any], prefix: Path, dataset: str) -> None:
    """Per modality, each column's mean ± std over frames; then the per-clip share of frames with a face."""
    fig, axes = _figure(3, 1, figsize=(11, 10), gridspec_kw={"height_ratios": [1, 1, 0.8]})
    for ax, modality in zip(axes, ("audio", "visual")):
        s = stats[modality]
        if not s["frames"]:
            ax.set_title(modality)
            _note(ax, f"{modality}: the shards hold no real frame, so there is no distribution to show")
            continue
        x = np.arange(len(s["columns"]))
        ax.errorbar(x, s["mean"], yerr=s["std"], fmt="o", markersize=2.5, color="black", ecolor="0.55",
                    elinewidth=0.8, capsize=1.5)
        ax.set_yscale("symlog", linthresh=1.0)
        every = max(1, math.ceil(len(x) / 48))
        ax.set_xticks(x[::every], [s["columns"][i] for i in x[::every]], rotation=90, fontsize=6)
        ax.set_xlim(-1, len(x))
        ax.set_ylabel("mean ± std over frames\n(column's own unit; symlog)")
        ax.set_title(f"{modality}: {len(x)} columns, {s['frames']:,} real frames")
    ax = axes[2]
    if stats["has_face_column"] and stats["face_share"]:
        share = 100 * np.asarray(stats["face_share"])
        ax.hist(share, bins=np.linspace(0, 100, 21), color=OURS["color"], edgecolor="black", linewidth=0.5)
        ax.set_xlabel("sampled frames with a face (% of the clip's frames)")
        ax.set_ylabel("clips (count)")
        no_frames = stats["clips_without_frames"]
        ax.set_title(f"face found in {share.mean():.1f} % of frames on average over {len(share):,} clips"
                     + (f"; {no_frames:,} clips hold no video frames" if no_frames else ""))
    else:
        _note(ax, "share of frames with a face: the visual backend writes no face_present column"
              if not stats["has_face_column"] else "no clip holds video frames")
    fig.suptitle(f"{dataset}: feature distributions from {stats['shards_read']} of {stats['shards']} shards "
                 f"({stats['clips']:,} clips)", y=1.0)
    fig.tight_layout()
    save(fig, prefix)


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
    fig, axes = _figure(2, 3, figsize=(13, 7))
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
            _note(ax, "not logged by this run" + (" (pretraining has no valid split)" if column == "valid_mae" else ""))
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
    fig, axes = _figure(1, len(TABLE_PANELS), figsize=(2.2 * len(TABLE_PANELS) + 2.5, 1.6 + 0.75 * len(rows)),
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
    fig, axes = _figure(len(corpora), 2, figsize=(11, 3.6 * len(corpora)), gridspec_kw={"width_ratios": [1.6, 1]},
                        squeeze=False)
    drawn: dict[str, Any] = {}
    legend: tuple[list[Any], list[str]] = ([], [])
    for (left, right), corpus in zip(axes, corpora):
        own = sorted((r for r in rows if r["corpus"] == corpus), key=lambda r: float(r["g"]))
        if not own:
            for ax, what in ((left, "Acc-2 and F1"), (right, "MAE")):
                ax.set_title(f"{corpus}: {what} against g")
                _note(ax, f"{corpus}: no runs\n(this table has no {corpus} rows:\nno dataset of the config plays {corpus})")
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


# HTML pages for the report: tables and the config as text a browser shows ---------------------------

PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{title}</title><style>
body {{font-family: sans-serif; font-size: 13px; margin: 1em; color: #111}}
table {{border-collapse: collapse}} th, td {{border: 1px solid #999; padding: 3px 7px; text-align: right}}
td:first-child, th:first-child {{text-align: left}} th {{background: #eee}} pre {{font-size: 13px}}
</style></head><body>
{body}
</body></html>
"""


def _inline(text: str) -> str:
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def markdown_html(markdown: str) -> str:
    """The Markdown that kebr writes (a '# ' title, paragraphs, pipe tables) as an HTML page."""
    out, table = [], []

    def flush() -> None:
        if table:
            cells = [[_inline(c.strip()) for c in line.strip().strip("|").split("|")] for line in table]
            body = [cells[0]] + [r for r in cells[1:] if not all(set(c) <= set("-: ") for c in r)]
            out.append("<table><tr>" + "".join(f"<th>{c}</th>" for c in body[0]) + "</tr>"
                       + "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in body[1:])
                       + "</table>")
            table.clear()

    for line in markdown.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        flush()
        if line.startswith("# "):
            out.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.strip():
            out.append(f"<p>{_inline(line)}</p>")
    flush()
    title = next((line[2:] for line in markdown.splitlines() if line.startswith("# ")), "kebr")
    return PAGE.format(title=html.escape(title), body="\n".join(out))


def clips_html(bars: list[tuple[str, str, int]], total: int, dataset: str) -> str:
    rows = "".join(f"<tr><td>{html.escape(s)}</td><td>{html.escape(label)}</td><td>{n:,}</td>"
                   f"<td>{100 * n / total:.1f}</td></tr>" for s, label, n in bars)
    body = (f"<h1>{html.escape(dataset)}: what happened to its {total:,} input clips</h1>"
            "<p>From clips.tsv (every input clip); reasons grouped by their text before the clip-specific "
            "detail.</p><table><tr><th>status</th><th>reason</th><th>clips</th><th>%</th></tr>"
            f"{rows}</table>")
    return PAGE.format(title=f"{html.escape(dataset)} clips", body=body)


def config_html(config: dict[str, Any], source: str) -> str:
    import yaml

    body = (f"<h1>Configuration</h1><p>{html.escape(source)} as validated against "
            "kebr/schemas/config.schema.yaml, every default filled in (what <code>kebr config-check</code> "
            f"prints).</p><pre>{html.escape(yaml.safe_dump(config, sort_keys=False))}</pre>")
    return PAGE.format(title="kebr configuration", body=body)


def write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# What `kebr plots` runs ---------------------------------------------------------------------------

def dataset_figures(config: dict[str, Any], dataset: str, clips_tsv: Path, out_dir: Path,
                    max_shards: int = 20) -> list[Path]:
    """``out_dir``/clips, durations, features (.png, .svg) and clips.html of one dataset."""
    summary = summarize_clips(clips_tsv)
    shards = shard_paths(config, dataset) if summary["counts"] else []
    bars = plot_clips(summary, out_dir / "clips", dataset)
    write_text(out_dir / "clips.html", clips_html(bars, summary["total"], dataset))
    plot_durations(summary, shards, out_dir / "durations", dataset)
    if shards:
        plot_features(feature_stats(shards, max_shards), out_dir / "features", dataset)
    else:
        fig, ax = _figure(figsize=(8, 2))
        _note(ax, f"{dataset}: no clip made it into a shard, so there are no features to show")
        save(fig, out_dir / "features")
    return sorted(out_dir.iterdir())


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
