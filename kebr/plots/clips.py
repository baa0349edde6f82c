"""A dataset's figures: what happened to its clips, their durations, and its features."""

from __future__ import annotations

import csv
import json
import math
import re
from collections import Counter
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from kebr.clips import read_kind
from kebr.experiments import shard_paths
from kebr.plots.html import clips_html, write_text
from kebr.plots.style import (
    GREYS,
    LINESTYLES,
    MAX_REASON_BARS,
    OURS,
    SKIPPED,
    figure,
    note,
    save,
)

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
    fig, ax = figure(figsize=(8.5, 1.2 + 0.32 * max(len(bars), 1)))
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
    fig, ax = figure(figsize=(8.5, 3.6))
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
    fig, axes = figure(3, 1, figsize=(11, 10), gridspec_kw={"height_ratios": [1, 1, 0.8]})
    for ax, modality in zip(axes, ("audio", "visual")):
        s = stats[modality]
        if not s["frames"]:
            ax.set_title(modality)
            note(ax, f"{modality}: the shards hold no real frame, so there is no distribution to show")
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
        note(ax, "share of frames with a face: the visual backend writes no face_present column"
              if not stats["has_face_column"] else "no clip holds video frames")
    fig.suptitle(f"{dataset}: feature distributions from {stats['shards_read']} of {stats['shards']} shards "
                 f"({stats['clips']:,} clips)", y=1.0)
    fig.tight_layout()
    save(fig, prefix)


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
        fig, ax = figure(figsize=(8, 2))
        note(ax, f"{dataset}: no clip made it into a shard, so there are no features to show")
        save(fig, out_dir / "features")
    return sorted(out_dir.iterdir())
