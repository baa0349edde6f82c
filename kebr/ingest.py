"""Corpus layouts -> one plan of every clip, with its split and shard.

Layouts (docs/DATA.md): ``voxceleb1``, ``voxceleb2``, ``mmsa_raw`` (MOSI/MOSEI), ``manifest`` and
``mmsa_pickle`` (MMSA's processed feature pickles; the reader lives in kebr/mmsa.py).
Clip ids are the corpus's own relative names (``id00012/21Uxsk56VDQ/00001`` for VoxCeleb,
``<video_id>/<clip_id>`` for MMSA), so an id points back at the file it came from.

Every reader names where each row came from (``source``: ``file:line``, the media file, the pickle's
split and index), and every row is checked, an error naming that place: empty clip ids,
labels that are not finite numbers, missing columns (with the columns the file has), duplicate ids
(both places). File names that are not UTF-8 (legal on Linux, common in old archives) are kept: the
media path keeps the file's exact bytes (surrogate escapes, written to the plan TSV as they are), and
the clip id and speaker, which go into UTF-8 outputs (clips.tsv, HDF5), spell each undecodable byte
as ``\\xNN``.

The plan is one TSV per shard (kebr/tsv.py): every field quoted, so any value, a carriage return or
line feed inside a clip id or transcript included, reads back exactly; the table ends with its row
count. Each row holds its media's size and mtime, so a file replaced in place changes its shard's
plan, and ``snakemake --forcerun plan`` reruns exactly the shards whose clips were added, removed,
edited or replaced. Reading a plan checks its layout, the row count, and that every row's shard is the file's
own (``<shard>.tsv``), so a damaged plan fails naming the file instead of losing or inventing clips.

Splits are speaker-disjoint (VoxCeleb speakers, MOSI/MOSEI source videos): a corpus that ships
splits is checked, one that does not gets a split per speaker drawn from a stable hash of
(seed, speaker). Shards are consecutive runs of ``shard_size`` clips in clip-id order, so the same
corpus and config always give the same shards.
"""

from __future__ import annotations

import csv
import hashlib
import math
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Iterator

from kebr import paths
from kebr.clips import Clip, media_stat
from kebr.tsv import TableError, read_table, write_table

SPLITS = ("train", "valid", "test")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm")
MMSA_MODES = {"train": "train", "valid": "valid", "val": "valid", "dev": "valid", "test": "test"}


def readable(name: str) -> str:
    """``name`` with each undecodable byte of a non-UTF-8 file name (a surrogate escape) as ``\\xNN``."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _text(value: str | None, where: str, column: str) -> str | None:
    """A CSV text cell, or None when empty; a cell that is not UTF-8 is an error naming its place."""
    if not value:
        return None
    if readable(value) != value:
        raise ValueError(f"{where}: column {column!r} is not UTF-8 text: {readable(value)!r}")
    return value


def _label(value: str | None, where: str) -> float | None:
    """A label cell: empty = unlabelled; anything else must be a finite number."""
    value = (value or "").strip()
    if value == "":
        return None
    try:
        label = float(value)
    except ValueError:
        raise ValueError(f"{where}: label {value!r} is not a number") from None
    if not math.isfinite(label):
        raise ValueError(f"{where}: label {value!r} is not a finite number")
    return label


def _csv_rows(path: Path, required: set[str], any_of: set[str] = frozenset()) -> Iterator[tuple[str, dict[str, str]]]:
    """(``file:line``, row) of a CSV: UTF-8 (a byte-order mark allowed; bytes that are not UTF-8 kept
    as surrogate escapes). A missing column is an error naming the file, the column and the columns
    the file has."""
    with path.open(newline="", encoding="utf-8-sig", errors="surrogateescape") as f:
        reader = csv.DictReader(f)
        columns = [c.strip() for c in reader.fieldnames or []]
        reader.fieldnames = columns
        missing = sorted(required - set(columns))
        if any_of and not any_of & set(columns):
            missing.append(" or ".join(sorted(any_of)))
        if missing:
            raise ValueError(f"{path}: missing column {', '.join(missing)}; its columns are {columns}")
        for row in reader:
            yield f"{path}:{reader.line_num}", row


def stable_unit(*parts: object) -> float:
    """A number in [0, 1) from a stable hash of ``parts`` (same on every machine and Python)."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def speaker_split(speaker: str, seed: int, valid_fraction: float, test_fraction: float) -> str:
    u = stable_unit("split", seed, speaker)
    if u < test_fraction:
        return "test"
    if u < test_fraction + valid_fraction:
        return "valid"
    return "train"


def _sorted_dirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir()) if path.is_dir() else []


def read_voxceleb2(root: Path, subsets: Iterable[str]) -> Iterator[dict[str, Any]]:
    """``<subset>/mp4/<speaker>/<youtube id>/<utt>.mp4``, with ``<subset>/aac/.../<utt>.m4a`` when present."""
    for subset in subsets:
        video_root, audio_root = root / subset / "mp4", root / subset / "aac"
        if not video_root.is_dir():
            raise FileNotFoundError(f"VoxCeleb2 layout: no folder {video_root}")
        for speaker_dir in _sorted_dirs(video_root):
            for yt_dir in _sorted_dirs(speaker_dir):
                for video in sorted(yt_dir.glob("*.mp4")):
                    rel = video.relative_to(video_root).with_suffix("")
                    audio = audio_root / rel.with_suffix(".m4a")
                    yield {
                        "clip_id": readable(rel.as_posix()),
                        "video": str(video),
                        "audio": str(audio) if audio.is_file() else None,
                        "speaker": readable(speaker_dir.name),
                        "source": readable(str(video)),
                    }


def read_voxceleb1(root: Path, meta: Path | None) -> Iterator[dict[str, Any]]:
    """``wav/<speaker>/<youtube id>/<utt>.wav`` plus face-track folders found through ``vox1_meta.csv``.

    The face track of utterance ``00007`` is ``unzippedIntervalFaces/data/<Name>/1.6/<yt>/7/``; a
    missing track leaves ``video`` empty, and the visual stage records that clip's skip.
    """
    meta = meta or root / "vox1_meta.csv"
    names: dict[str, str] = {}
    if meta.is_file():
        with meta.open(newline="", encoding="utf-8", errors="surrogateescape") as f:
            for row in csv.reader(f, delimiter="\t"):
                if row and row[0].startswith("id1"):
                    names[row[0].strip()] = row[1].strip()
    wav_root = root / "wav"
    if not wav_root.is_dir():
        raise FileNotFoundError(f"VoxCeleb1 layout: no folder {wav_root}")
    faces_root = root / "unzippedIntervalFaces" / "data"
    for speaker_dir in _sorted_dirs(wav_root):
        for yt_dir in _sorted_dirs(speaker_dir):
            for wav in sorted(yt_dir.glob("*.wav")):
                face_dir = faces_root / names.get(speaker_dir.name, "?") / "1.6" / yt_dir.name / str(int(wav.stem))
                yield {
                    "clip_id": readable(wav.relative_to(wav_root).with_suffix("").as_posix()),
                    "audio": str(wav),
                    "video": str(face_dir) if face_dir.is_dir() else None,
                    "speaker": readable(speaker_dir.name),
                    "source": readable(str(wav)),
                }


def read_mmsa_raw(root: Path) -> Iterator[dict[str, Any]]:
    """MMSA raw layout: ``label.csv`` and ``Raw/<video_id>/<clip_id>.mp4``; the source video is the speaker."""
    for where, row in _csv_rows(root / "label.csv", {"video_id", "clip_id", "mode"}):
        video_id, clip_id = (row.get("video_id") or "").strip(), (row.get("clip_id") or "").strip()
        if not video_id or not clip_id:
            raise ValueError(f"{where}: empty video_id or clip_id")
        folder = root / "Raw" / video_id
        video = next((folder / f"{clip_id}{s}" for s in VIDEO_SUFFIXES if (folder / f"{clip_id}{s}").exists()),
                     folder / f"{clip_id}.mp4")
        mode = (row.get("mode") or "").strip().lower()
        if mode not in MMSA_MODES:
            raise ValueError(f"{where}: clip {video_id}/{clip_id} has unknown mode {mode!r}")
        yield {
            "clip_id": readable(f"{video_id}/{clip_id}"),
            "video": str(video),
            "text": _text(row.get("text"), where, "text"),
            "label": _label(row.get("label"), where),
            "split": MMSA_MODES[mode],
            "speaker": readable(video_id),
            "source": where,
        }


def read_manifest(path: Path) -> Iterator[dict[str, Any]]:
    """A CSV with clip_id and one of video/audio (text, label, split, speaker optional); paths
    relative to the manifest's folder."""
    base = path.parent
    for where, row in _csv_rows(path, {"clip_id"}, any_of={"video", "audio"}):
        clip_id = (row.get("clip_id") or "").strip()
        if not clip_id:
            raise ValueError(f"{where}: empty clip_id")
        media = {k: str(base / row[k]) if row.get(k) else None for k in ("video", "audio")}
        split = (row.get("split") or "").strip().lower()
        yield {
            "clip_id": readable(clip_id),
            **media,
            "text": _text(row.get("text"), where, "text"),
            "label": _label(row.get("label"), where),
            "split": MMSA_MODES.get(split, split) or None,
            "speaker": readable((row.get("speaker") or "").strip() or clip_id),
            "source": where,
        }


def check_sources(name: str, dataset: dict[str, Any]) -> None:
    """Raise FileNotFoundError naming the dataset and the path when its corpus root, manifest or the
    folders its layout reads are missing (the workflow calls this before it schedules any job)."""
    layout = dataset["layout"]
    if layout in ("manifest", "mmsa_pickle"):
        key = "manifest" if layout == "manifest" else "pickle"
        needed = [(key, Path(dataset[key]))]
    else:
        root = Path(dataset["root"])
        needed = [("root", root)]
        if layout == "voxceleb2":
            needed += [(f"subset {s}", root / s / "mp4") for s in dataset.get("subsets", ["dev"])]
        elif layout == "voxceleb1":
            needed += [("wav folder", root / "wav")] + ([("meta", Path(dataset["meta"]))] if dataset.get("meta") else [])
        elif layout == "mmsa_raw":
            needed += [("label.csv", root / "label.csv")]
    for what, path in needed:
        if not path.exists():
            raise FileNotFoundError(f"dataset {name!r} (layout {layout}): {what} {path} does not exist")


def read_layout(dataset: dict[str, Any]) -> Iterator[dict[str, Any]]:
    layout = dataset["layout"]
    if layout == "voxceleb2":
        return read_voxceleb2(Path(dataset["root"]), dataset.get("subsets", ["dev"]))
    if layout == "voxceleb1":
        meta = Path(dataset["meta"]) if dataset.get("meta") else None
        return read_voxceleb1(Path(dataset["root"]), meta)
    if layout == "mmsa_raw":
        return read_mmsa_raw(Path(dataset["root"]))
    if layout == "manifest":
        return read_manifest(Path(dataset["manifest"]))
    if layout == "mmsa_pickle":
        from kebr.mmsa import read_mmsa_pickle  # h5py: the Snakefile imports this module in the submit venv

        return read_mmsa_pickle(Path(dataset["pickle"]), trusted=dataset.get("trust_pickle", False))
    raise ValueError(f"unknown layout {layout!r}")


def assign_splits(rows: list[dict[str, Any]], seed: int, valid_fraction: float, test_fraction: float) -> None:
    """Fill missing splits per speaker and check that no speaker spans two splits."""
    by_speaker: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        if not row.get("split"):
            row["split"] = speaker_split(row["speaker"], seed, valid_fraction, test_fraction)
        if row["split"] not in SPLITS:
            raise ValueError(f"{row['source']}: clip {row['clip_id']}: unknown split {row['split']!r} "
                             f"(one of {', '.join(SPLITS)}, or val/dev)")
        by_speaker[row["speaker"]].add(row["split"])
    leaks = {s: sorted(v) for s, v in by_speaker.items() if len(v) > 1}
    if leaks:
        shown = ", ".join(f"{s} in {v}" for s, v in list(leaks.items())[:5])
        raise ValueError(f"{len(leaks)} speakers/videos appear in more than one split (e.g. {shown})")


def plan_clips(dataset: dict[str, Any], seed: int, shard_size: int, valid_fraction: float,
               test_fraction: float) -> list[Clip]:
    """Every clip of a dataset with split and shard, in clip-id order, and its media's size and
    mtime (``Clip.video_stat``, ``audio_stat``: a file replaced in place changes its shard's plan)."""
    rows = list(read_layout(dataset))
    check_rows(rows)
    if not rows:
        raise ValueError("the dataset has no clips: check its root/manifest and layout")
    assign_splits(rows, seed, valid_fraction, test_fraction)
    rows.sort(key=lambda r: r["clip_id"])
    width = max(5, len(str(math.ceil(len(rows) / shard_size))))
    return [Clip(**{k: v for k, v in r.items() if k != "source"}, shard=f"{i // shard_size:0{width}d}",
                 video_stat=media_stat(r.get("video")), audio_stat=media_stat(r.get("audio")))
            for i, r in enumerate(rows)]


def check_rows(rows: list[dict[str, Any]]) -> None:
    """What every layout's rows must satisfy, whatever reader made them (each row names its
    ``source``, e.g. ``file:line``): a non-empty clip id, a finite label or none, unique ids."""
    for row in rows:
        if not row["clip_id"]:
            raise ValueError(f"{row['source']}: empty clip id")
        if row.get("label") is not None and not math.isfinite(row["label"]):
            raise ValueError(f"{row['source']}: clip {row['clip_id']}: label {row['label']} is not a finite number")
    check_unique_ids(rows)


def check_unique_ids(rows: list[dict[str, Any]]) -> None:
    """Each clip id once; duplicates are reported with where each copy was read (linear time)."""
    seen: dict[str, list[str]] = {}
    for row in rows:
        seen.setdefault(row["clip_id"], []).append(row["source"])
    duplicates = {i: places for i, places in seen.items() if len(places) > 1}
    if duplicates:
        shown = "; ".join(f"{i!r} at {' and '.join(places)}" for i, places in sorted(duplicates.items())[:5])
        raise ValueError(f"{len(duplicates)} duplicate clip ids: {shown}")


PLAN_FIELDS = ["clip_id", "video", "audio", "text", "label", "split", "speaker", "shard", "video_stat", "audio_stat"]


def write_plan(clips: list[Clip], out_dir: Path) -> list[str]:
    """One TSV per shard under ``out_dir`` (each shard job reads only its own); returns shard names."""
    out_dir.mkdir(parents=True, exist_ok=True)
    by_shard: dict[str, list[Clip]] = defaultdict(list)
    for clip in clips:
        by_shard[clip.shard].append(clip)
    for shard, members in by_shard.items():
        write_clip_table(members, Path(paths.shard_plan(out_dir, shard)))
    return sorted(by_shard)


def write_clip_table(clips: list[Clip], path: Path) -> None:
    """A shard's plan TSV ``<shard>.tsv`` (atomically; kebr/tsv.py), every clip of that shard. Media
    paths keep the exact bytes of non-UTF-8 file names."""
    path = Path(path)
    for clip in clips:
        if clip.shard != path.stem:
            raise ValueError(f"{path}: clip {clip.clip_id!r} is of shard {clip.shard!r}, not the file's {path.stem!r}")
    write_table(path, PLAN_FIELDS, (c.to_row() for c in clips), count=True)


def read_clip_table(path: Path) -> list[Clip]:
    """The clips of a plan TSV, checked (kebr/tsv.py ``read_table``; each row's shard is the file's)."""
    path = Path(path)
    clips = []
    for number, row in enumerate(read_table(path, PLAN_FIELDS, count=True), start=1):
        if row["shard"] != path.stem:
            raise TableError(f"{path}: damaged plan: row {number} (clip {row['clip_id']!r}) is of shard "
                             f"{row['shard']!r}, not the file's {path.stem!r}")
        clips.append(Clip.from_row(row))
    return clips
