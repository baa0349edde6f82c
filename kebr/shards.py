"""HDF5 shards: the one format between feature extraction and training.

Layout of schema version 2 (N clips; every string is UTF-8):

    /                 attrs: schema_version, dataset, shard, kebr_version, library_versions (JSON),
                             feature_config (JSON), text_model, vocab_sha1, pad_token_id,
                             fingerprint (kebr.config.features_fingerprint of the config that made it)
    id, split, speaker        (N,) str
    label                     (N,) float32, NaN for unlabelled clips
    text/raw, text/masked, text/word, text/source   (N,) str   (source: gold | asr)
    text/char_start, text/char_end, text/word_index (N,) int32
    text/mask_label, text/mask_score                (N,) float32
    text/no_sentiment_word                          (N,) bool
    text/input_ids            (N, L) int32, the MASKED text (pretraining), padded with pad_token_id
    text/attention_mask       (N, L) bool
    text/mask_index           (N,) int32
    text/raw_input_ids        (N, L) int32, the unmasked text/raw (fine-tuning), truncated to L tokens
    text/raw_attention_mask   (N, L) bool
    asr/avg_logprob, asr/no_speech_prob, asr/language_prob (N,) float32; asr/language (N,) str;
    asr/words                 (N,) str, JSON [[word, start_s, end_s, probability], ...]
    audio/features            (N, T_a, d_a) float32, zero-padded after audio/lengths (N,) int32;
                              attrs columns
    visual/features, visual/lengths  the same for the visual stream

The file is written under a temporary name and renamed when complete, so a shard that exists is
whole. ``ShardDataset`` reads rows lazily; each DataLoader worker opens its own file handles and keeps
at most ``max_open_files`` of them (least recently used closed first), so a corpus of any number of
shards stays under the open-file limit (often 1,024; VoxCeleb2 has ~1,100 shards).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import h5py
import numpy as np
import torch

SCHEMA_VERSION = 2  # 2: text/raw_input_ids, text/raw_attention_mask
STR = h5py.string_dtype("utf-8")
# Open shard files per process (DataLoader worker): far under the usual limit of 1,024 even with a few
# workers per process. Random reads over more shards than this reopen files: measured on 100 shards of
# 1,000 clips with 64 open, a row takes ~1.8x as long as with every shard open (14 vs 8 ms, 2 cores).
MAX_OPEN_FILES = 128


@dataclass
class ShardRow:
    """Everything one clip contributes to a shard."""

    clip_id: str
    split: str
    speaker: str
    label: float | None
    transcript: dict[str, Any]  # kebr.asr.Transcript.to_json()
    masked: Any  # kebr.masking.MaskedText
    audio: np.ndarray  # (T, d_a), T <= audio frames
    visual: np.ndarray  # (T, d_v), T <= visual frames


def encode_raw_text(tokenizer: Any, text: str, length: int) -> list[int]:
    """The unmasked transcript's token ids (fine-tuning, prediction): plain truncation to ``length``."""
    return tokenizer(text, truncation=True, max_length=length, verbose=False)["input_ids"]


def pad_ids(sequences: Sequence[Sequence[int]], length: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids (N, length) int32 padded with ``pad_id``, attention mask (N, length) bool)."""
    ids = np.full((len(sequences), length), pad_id, dtype=np.int32)
    attention = np.zeros((len(sequences), length), dtype=bool)
    for i, seq in enumerate(sequences):
        ids[i, : len(seq)] = seq
        attention[i, : len(seq)] = True
    return ids, attention


def pad_frames(arrays: Sequence[np.ndarray], length: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(features (N, length, width) float32 zero-padded, lengths (N,) int32)."""
    out = np.zeros((len(arrays), length, width), dtype=np.float32)
    lengths = np.zeros(len(arrays), dtype=np.int32)
    for i, a in enumerate(arrays):
        n = min(len(a), length)
        out[i, :n] = a[:n]
        lengths[i] = n
    return out, lengths


def _put(group: h5py.Group, name: str, data: np.ndarray, **kw: Any) -> h5py.Dataset:
    """Every dataset of a shard is made here. No modification times are stored, so the same clips
    and config give a byte-identical shard."""
    kw["track_times"] = False
    if data.shape[0] == 0:  # h5py cannot chunk an empty dataset
        return group.create_dataset(name, data=data, **kw)
    if data.ndim >= 2:
        # Training reads single rows in random order: a frame array gets one chunk per clip so a
        # read decompresses that clip only; small per-token arrays share chunks of 64 rows.
        chunks = (1 if data.ndim == 3 else min(len(data), 64),) + data.shape[1:]
        return group.create_dataset(name, data=data, chunks=chunks, compression="gzip",
                                    compression_opts=4, shuffle=True, **kw)
    return group.create_dataset(name, data=data, **kw)


def vocab_sha1(tokenizer: Any) -> str:
    """Fingerprint of a tokenizer's vocabulary: shards and models must agree on token ids (every
    uncased BERT, MiniLM included, shares one vocabulary, so their shards are interchangeable)."""
    vocab = sorted(tokenizer.get_vocab().items())
    return hashlib.sha1(json.dumps(vocab).encode()).hexdigest()


def write_shard(path: str | Path, rows: Sequence[ShardRow], *, audio_columns: Sequence[str],
                visual_columns: Sequence[str], audio_frames: int, visual_frames: int, text_length: int,
                tokenizer: Any, attrs: dict[str, Any]) -> Path:
    """Write ``rows`` as one shard at ``path`` (atomically).

    ``tokenizer`` is the one that made the rows' masked ``input_ids``; it also tokenizes the unmasked
    transcript for fine-tuning (ordinary truncation to ``text_length``) and gives the padding id.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    pad_token_id = tokenizer.pad_token_id
    strings = lambda values: np.array(list(values), dtype=object)  # noqa: E731
    with h5py.File(tmp, "w") as f:
        f.attrs["schema_version"] = SCHEMA_VERSION
        f.attrs["pad_token_id"] = pad_token_id
        f.attrs["vocab_sha1"] = vocab_sha1(tokenizer)
        for key, value in attrs.items():
            f.attrs[key] = value if isinstance(value, (str, int, float)) else json.dumps(value, sort_keys=True)
        _put(f, "id", strings(r.clip_id for r in rows), dtype=STR)
        _put(f, "split", strings(r.split for r in rows), dtype=STR)
        _put(f, "speaker", strings(r.speaker for r in rows), dtype=STR)
        _put(f, "label", np.array([np.nan if r.label is None else r.label for r in rows],
                                                dtype=np.float32))

        text = f.create_group("text")
        m = [r.masked for r in rows]
        _put(text, "raw", strings(x.text for x in m), dtype=STR)
        _put(text, "masked", strings(x.masked_text for x in m), dtype=STR)
        _put(text, "word", strings(x.word for x in m), dtype=STR)
        _put(text, "source", strings(r.transcript["source"] for r in rows), dtype=STR)
        for name in ("char_start", "char_end", "word_index", "mask_index"):
            _put(text, name, np.array([getattr(x, name) for x in m], dtype=np.int32))
        _put(text, "mask_label", np.array([x.label for x in m], dtype=np.float32))
        _put(text, "mask_score", np.array([x.score for x in m], dtype=np.float32))
        _put(text, "no_sentiment_word", np.array([x.no_sentiment_word for x in m], dtype=bool))
        raw_ids = [encode_raw_text(tokenizer, x.text, text_length) for x in m]
        for prefix, sequences in (("", [x.input_ids for x in m]), ("raw_", raw_ids)):
            ids, attention = pad_ids(sequences, text_length, pad_token_id)
            _put(text, f"{prefix}input_ids", ids)
            _put(text, f"{prefix}attention_mask", attention)

        asr = f.create_group("asr")
        t = [r.transcript for r in rows]
        for name in ("avg_logprob", "no_speech_prob", "language_prob"):
            _put(asr, name, np.array([x[name] for x in t], dtype=np.float32))
        _put(asr, "language", strings(x["language"] for x in t), dtype=STR)
        _put(asr, "words", strings(json.dumps(x["words"]) for x in t), dtype=STR)

        for name, arrays, frames, columns in (
            ("audio", [r.audio for r in rows], audio_frames, audio_columns),
            ("visual", [r.visual for r in rows], visual_frames, visual_columns),
        ):
            group = f.create_group(name)
            features, lengths = pad_frames(arrays, frames, len(columns))
            _put(group, "features", features)
            _put(group, "lengths", lengths)
            group.attrs["columns"] = json.dumps(list(columns))
    os.replace(tmp, path)
    return path


def read_attrs(path: str | Path) -> dict[str, Any]:
    with h5py.File(path, "r") as f:
        attrs = dict(f.attrs)
        attrs["audio_columns"] = json.loads(f["audio"].attrs["columns"])
        attrs["visual_columns"] = json.loads(f["visual"].attrs["columns"])
        attrs["n"] = len(f["id"])
    if attrs["schema_version"] != SCHEMA_VERSION:
        raise ValueError(f"{path}: shard schema {attrs['schema_version']}, this kebr reads {SCHEMA_VERSION}")
    return attrs


class OpenFiles:
    """HDF5 files opened for reading on first use in each process (a handle inherited through fork is
    not safe to use), at most ``limit`` at a time: the least recently used one is closed when another
    is needed. ``files[i]`` is ``paths[i]`` open."""

    def __init__(self, paths: Sequence[str | Path], limit: int = MAX_OPEN_FILES) -> None:
        if limit < 1:
            raise ValueError(f"max_open_files must be >= 1, got {limit}")
        self.paths, self.limit = [Path(p) for p in paths], limit
        self._handles: OrderedDict[int, h5py.File] = OrderedDict()
        self._pid = -1

    def __getitem__(self, i: int) -> h5py.File:
        if self._pid != os.getpid():  # a forked worker: the parent's handles are not ours to use or close
            self._handles, self._pid = OrderedDict(), os.getpid()
        if i in self._handles:
            self._handles.move_to_end(i)
            return self._handles[i]
        while len(self._handles) >= self.limit:
            self._handles.popitem(last=False)[1].close()
        self._handles[i] = h5py.File(self.paths[i], "r")
        return self._handles[i]

    def __getstate__(self) -> dict[str, Any]:
        # Sent to a spawned DataLoader worker without this process's open files.
        return {**self.__dict__, "_handles": OrderedDict(), "_pid": -1}

    def close(self) -> None:
        """Close this process's open files (they reopen on the next read)."""
        if self._pid == os.getpid():
            for handle in self._handles.values():
                handle.close()
        self._handles.clear()


class ShardDataset(torch.utils.data.Dataset):
    """Rows of one split across shards, read lazily: RAM does not grow with the corpus.

    File handles are opened on first use in each process, so DataLoader workers each read through
    their own; each process keeps at most ``max_open_files`` open (``OpenFiles``).
    """

    def __init__(self, paths: Sequence[str | Path], split: str | None = None, labelled: bool = False,
                 max_open_files: int = MAX_OPEN_FILES):
        self.files = OpenFiles(paths, max_open_files)
        self.paths = self.files.paths
        self.index: list[tuple[int, int]] = []
        first: dict[str, Any] | None = None
        for i, path in enumerate(self.paths):
            attrs = read_attrs(path)
            if first is None:
                first = attrs
            elif (attrs["audio_columns"], attrs["visual_columns"], attrs["vocab_sha1"]) != (
                first["audio_columns"], first["visual_columns"], first["vocab_sha1"]):
                raise ValueError(f"{path}: features or tokenizer differ from {self.paths[0]}")
            with h5py.File(path, "r") as f:
                splits = f["split"].asstr()[()] if attrs["n"] else np.array([])
                labels = f["label"][()]
            keep = np.ones(len(splits), dtype=bool) if split is None else splits == split
            if labelled:
                keep &= ~np.isnan(labels)
            self.index.extend((i, int(r)) for r in np.flatnonzero(keep))
        self.attrs = first or {}

    def __len__(self) -> int:
        return len(self.index)

    def close(self) -> None:
        """Close this process's open shard files (they reopen on the next read)."""
        self.files.close()

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        shard, row = self.index[item]
        f = self.files[shard]
        audio_len, visual_len = int(f["audio/lengths"][row]), int(f["visual/lengths"][row])
        audio = torch.from_numpy(f["audio/features"][row])
        visual = torch.from_numpy(f["visual/features"][row])
        return {
            "input_ids": torch.from_numpy(f["text/input_ids"][row].astype(np.int64)),
            "attention_mask": torch.from_numpy(f["text/attention_mask"][row]),
            "raw_input_ids": torch.from_numpy(f["text/raw_input_ids"][row].astype(np.int64)),
            "raw_attention_mask": torch.from_numpy(f["text/raw_attention_mask"][row]),
            "mask_index": torch.tensor(int(f["text/mask_index"][row])),
            "mask_label": torch.tensor(float(f["text/mask_label"][row])),
            "label": torch.tensor(float(f["label"][row])),
            "audio": audio,
            "audio_mask": torch.arange(audio.shape[0]) < audio_len,
            "video": visual,
            "video_mask": torch.arange(visual.shape[0]) < visual_len,
        }

    def clip_id(self, item: int) -> str:
        shard, row = self.index[item]
        return self.files[shard]["id"].asstr()[row]
