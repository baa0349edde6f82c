"""Corpus layouts -> one plan of every clip, with its split and shard.

Layouts (spec/DATA.md): ``voxceleb1``, ``voxceleb2``, ``mmsa_raw`` (MOSI/MOSEI), ``manifest`` and
``mmsa_pickle`` (MMSA's processed feature pickles; the reader lives in kebr/mmsa.py).
Clip ids are the corpus's own relative names (``id00012/21Uxsk56VDQ/00001`` for VoxCeleb,
``<video_id>/<clip_id>`` for MMSA), so an id points back at the file it came from.

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

from kebr.clips import Clip

SPLITS = ("train", "valid", "test")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm")
MMSA_MODES = {"train": "train", "valid": "valid", "val": "valid", "dev": "valid", "test": "test"}


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
                        "clip_id": rel.as_posix(),
                        "video": str(video),
                        "audio": str(audio) if audio.is_file() else None,
                        "speaker": speaker_dir.name,
                    }


def read_voxceleb1(root: Path, meta: Path | None) -> Iterator[dict[str, Any]]:
    """``wav/<speaker>/<youtube id>/<utt>.wav`` plus face-track folders found through ``vox1_meta.csv``.

    The face track of utterance ``00007`` is ``unzippedIntervalFaces/data/<Name>/1.6/<yt>/7/``; a
    missing track leaves ``video`` empty, and the visual stage records that clip's skip.
    """
    meta = meta or root / "vox1_meta.csv"
    names: dict[str, str] = {}
    if meta.is_file():
        with meta.open(newline="") as f:
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
                    "clip_id": wav.relative_to(wav_root).with_suffix("").as_posix(),
                    "audio": str(wav),
                    "video": str(face_dir) if face_dir.is_dir() else None,
                    "speaker": speaker_dir.name,
                }


def read_mmsa_raw(root: Path) -> Iterator[dict[str, Any]]:
    """MMSA raw layout: ``label.csv`` and ``Raw/<video_id>/<clip_id>.mp4``; the source video is the speaker."""
    with (root / "label.csv").open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            video_id, clip_id = row["video_id"].strip(), str(row["clip_id"]).strip()
            folder = root / "Raw" / video_id
            video = next((folder / f"{clip_id}{s}" for s in VIDEO_SUFFIXES if (folder / f"{clip_id}{s}").exists()),
                         folder / f"{clip_id}.mp4")
            mode = row.get("mode", "").strip().lower()
            if mode not in MMSA_MODES:
                raise ValueError(f"{root / 'label.csv'}: clip {video_id}/{clip_id} has unknown mode {mode!r}")
            yield {
                "clip_id": f"{video_id}/{clip_id}",
                "video": str(video),
                "text": row.get("text") or None,
                "label": float(row["label"]) if row.get("label", "") != "" else None,
                "split": MMSA_MODES[mode],
                "speaker": video_id,
            }


def read_manifest(path: Path) -> Iterator[dict[str, Any]]:
    """A CSV with clip_id and one of video/audio (text, label, split, speaker optional); paths
    relative to the manifest's folder."""
    base = path.parent
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = {"clip_id"} - set(reader.fieldnames or [])
        if missing or not {"video", "audio"} & set(reader.fieldnames or []):
            raise ValueError(f"{path}: a manifest needs clip_id and one of video/audio, got {reader.fieldnames}")
        for row in reader:
            media = {k: str(base / row[k]) if row.get(k) else None for k in ("video", "audio")}
            split = (row.get("split") or "").strip().lower()
            yield {
                "clip_id": row["clip_id"].strip(),
                **media,
                "text": row.get("text") or None,
                "label": float(row["label"]) if row.get("label") else None,
                "split": MMSA_MODES.get(split, split) or None,
                "speaker": (row.get("speaker") or "").strip() or row["clip_id"].strip(),
            }


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
        from kebr.mmsa import read_mmsa_pickle

        return read_mmsa_pickle(Path(dataset["pickle"]), trusted=dataset.get("trust_pickle", False))
    raise ValueError(f"unknown layout {layout!r}")


def assign_splits(rows: list[dict[str, Any]], seed: int, valid_fraction: float, test_fraction: float) -> None:
    """Fill missing splits per speaker and check that no speaker spans two splits."""
    by_speaker: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        if not row.get("split"):
            row["split"] = speaker_split(row["speaker"], seed, valid_fraction, test_fraction)
        if row["split"] not in SPLITS:
            raise ValueError(f"clip {row['clip_id']}: unknown split {row['split']!r}")
        by_speaker[row["speaker"]].add(row["split"])
    leaks = {s: sorted(v) for s, v in by_speaker.items() if len(v) > 1}
    if leaks:
        shown = ", ".join(f"{s} in {v}" for s, v in list(leaks.items())[:5])
        raise ValueError(f"{len(leaks)} speakers/videos appear in more than one split (e.g. {shown})")


def plan_clips(dataset: dict[str, Any], seed: int, shard_size: int, valid_fraction: float,
               test_fraction: float) -> list[Clip]:
    """Every clip of a dataset with split and shard, in clip-id order."""
    rows = list(read_layout(dataset))
    ids = [r["clip_id"] for r in rows]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise ValueError(f"duplicate clip ids: {dup}")
    if not rows:
        raise ValueError("the dataset has no clips: check its root/manifest and layout")
    assign_splits(rows, seed, valid_fraction, test_fraction)
    rows.sort(key=lambda r: r["clip_id"])
    width = max(5, len(str(math.ceil(len(rows) / shard_size))))
    return [Clip(**{**r, "shard": f"{i // shard_size:0{width}d}"}) for i, r in enumerate(rows)]


PLAN_FIELDS = ["clip_id", "video", "audio", "text", "label", "split", "speaker", "shard"]


def write_plan(clips: list[Clip], out_dir: Path) -> list[str]:
    """One TSV per shard under ``out_dir`` (each shard job reads only its own); returns shard names."""
    out_dir.mkdir(parents=True, exist_ok=True)
    by_shard: dict[str, list[Clip]] = defaultdict(list)
    for clip in clips:
        by_shard[clip.shard].append(clip)
    for shard, members in by_shard.items():
        write_clip_table(members, out_dir / f"{shard}.tsv")
    return sorted(by_shard)


def write_clip_table(clips: list[Clip], path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, PLAN_FIELDS, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows(c.to_row() for c in clips)
    tmp.replace(path)


def read_clip_table(path: Path) -> list[Clip]:
    with Path(path).open(newline="", encoding="utf-8") as f:
        return [Clip.from_row(row) for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_MINIMAL)]
