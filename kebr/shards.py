"""HDF5 shards: the one format between feature extraction and training.

Layout of schema version 2 (N clips; every string is UTF-8):

    /                 attrs: schema_version, dataset, shard, kebr_version, library_versions (JSON),
                             feature_config (JSON), text_model, vocab_sha1, pad_token_id,
                             fingerprint (kebr.fingerprints.features_fingerprint of the config that made it),
                             models (JSON: the version of each model that made it, kebr/model_cache.py)
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
whole. Every dataset is stored contiguous and uncompressed (``_put``). ``ShardDataset`` reads batches:
the small per-row fields a stage uses once into RAM, frame arrays per batch as one read per run of
nearby rows; each DataLoader worker opens its own file handles and keeps at most ``max_open_files`` of
them (least recently used closed first), so a corpus of any number of shards stays under the
open-file limit (often 1,024; VoxCeleb2 has ~1,100 shards). The batch order that makes those reads
contiguous is kebr/train/data.py's.
"""

from __future__ import annotations

import errno
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

from kebr.model_cache import model_difference

SCHEMA_VERSION = 2  # 2: text/raw_input_ids, text/raw_attention_mask
STR = h5py.string_dtype("utf-8")
# Open shard files per process (DataLoader worker): far under the usual limit of 1,024 even with a few
# workers per process. A training batch reads from a few shards (kebr/train/data.py's groups), so a
# worker's working set is a handful of files; more open files only save reopening.
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
    """Every dataset of a shard is made here: contiguous and uncompressed, with no modification
    times, so the same clips and config give a byte-identical shard.

    Why uncompressed (``python bench/loader.py``): gzip saves ~15% of the bytes of float features but
    its decompression caps a loader process at ~3,000 rows/s, while a contiguous read of a run of rows
    is a plain file read; shards written with chunks and gzip by older versions read the same."""
    kw["track_times"] = False
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


def open_hdf5(path: str | Path) -> h5py.File:
    return h5py.File(path, "r")


class RawFile:
    """A file open for ``os.preadv`` (plain reads at byte offsets), closed by ``close()``."""

    def __init__(self, path: str | Path) -> None:
        self.fd = os.open(path, os.O_RDONLY)

    def read_into(self, buffer: np.ndarray, offset: int) -> None:
        """Fill the C-contiguous ``buffer`` from ``offset``: a short read is resumed, end of file is an error."""
        view, done = memoryview(buffer).cast("B"), 0
        while done < len(view):
            n = os.preadv(self.fd, [view[done:]], offset + done)
            if n == 0:
                raise OSError(errno.EIO, f"end of file at byte {offset + done}")
            done += n

    def close(self) -> None:
        os.close(self.fd)


class OpenFiles:
    """Files opened for reading on first use in each process (a handle inherited through fork is not
    safe to use), at most ``limit`` at a time: the least recently used one is closed when another is
    needed. ``files[i]`` is ``paths[i]`` opened by ``opener`` (HDF5 by default, or ``RawFile``)."""

    def __init__(self, paths: Sequence[str | Path], limit: int = MAX_OPEN_FILES,
                 opener: Any = None) -> None:
        if limit < 1:
            raise ValueError(f"max_open_files must be >= 1, got {limit}")
        self.paths, self.limit, self.opener = [Path(p) for p in paths], limit, opener or open_hdf5
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
        self._handles[i] = self.opener(self.paths[i])
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


# What a training stage reads of a shard, batch key -> HDF5 dataset: nothing else is read. Per-row
# scalars and token arrays (``SMALL``: ~220 bytes a clip, 240 MB for VoxCeleb2) are read once per
# shard when the dataset is made and kept in RAM; frame arrays (``FRAMES``: ~75 kB a clip) are read
# per batch, one read per contiguous run of rows (``ShardDataset.read``).
STAGE_FIELDS: dict[str | None, dict[str, str]] = {
    "pretrain": {"input_ids": "text/input_ids", "attention_mask": "text/attention_mask",
                 "mask_index": "text/mask_index", "mask_label": "text/mask_label"},
    "finetune": {"raw_input_ids": "text/raw_input_ids", "raw_attention_mask": "text/raw_attention_mask",
                 "label": "label"},
}
STAGE_FIELDS[None] = {**STAGE_FIELDS["pretrain"], **STAGE_FIELDS["finetune"]}
FRAMES = {"audio": "audio/features", "video": "visual/features"}
# A frame array's mask (True on real frames) is made from its lengths, also held in RAM.
FRAME_MASKS = {"audio_mask": "audio/lengths", "video_mask": "visual/lengths"}
# Rows of one shard closer than this are read as one span (the rows between are read and dropped):
# one HDF5 read costs about as much as copying ~8 unwanted rows.
GAP_ROWS = 8
# ``in_memory="auto"`` holds the frame arrays in RAM when they take at most this many bytes.
IN_MEMORY_AUTO_BYTES = 2 << 30


def runs(rows: np.ndarray, gap: int = GAP_ROWS) -> list[tuple[int, int]]:
    """Sorted row numbers as [start, stop) spans, merging rows at most ``gap`` apart."""
    if len(rows) == 0:
        return []
    breaks = np.flatnonzero(np.diff(rows) > gap)
    starts = np.r_[rows[0], rows[breaks + 1]]
    stops = np.r_[rows[breaks], rows[-1]] + 1
    return list(zip(starts.tolist(), stops.tolist()))


def read_rows(dataset: h5py.Dataset, rows: np.ndarray) -> np.ndarray:
    """``dataset[rows]`` for sorted, unique ``rows`` through h5py, one read per run of nearby rows
    (h5py's fancy indexing costs more than one read per row)."""
    out = np.empty((len(rows), *dataset.shape[1:]), dtype=dataset.dtype)
    filled = 0
    for start, stop in runs(rows):
        take = rows[filled:][: np.searchsorted(rows[filled:], stop)]
        span = np.empty((stop - start, *dataset.shape[1:]), dtype=dataset.dtype)
        dataset.read_direct(span, np.s_[start:stop])
        out[filled:filled + len(take)] = span[take - start]
        filled += len(take)
    return out


class RowSource:
    """One per-row array (``name``) of a list of files, one per shard, rows aligned with the shard's.

    Where the array is stored contiguous, uncompressed and in native byte order (every shard and
    sidecar kebr writes), a run of rows is one ``preadv`` at its byte offset straight into the
    batch's memory: none of h5py's per-call costs, which otherwise exceed the copy itself. Other
    layouts (older chunked, gzip shards) are read through h5py."""

    def __init__(self, name: str, hdf5: OpenFiles, raw: OpenFiles) -> None:
        self.name, self.hdf5, self.raw = name, hdf5, raw  # open files, shared by the arrays of a file
        self.offsets: list[int | None] = []
        for path in self.hdf5.paths:
            with h5py.File(path, "r") as f:
                array = f[name]
                plain = array.chunks is None and array.dtype.isnative and len(array) > 0
                self.offsets.append(array.id.get_offset() if plain else None)
                self.row_shape, self.dtype = array.shape[1:], array.dtype
        self.row_bytes = int(np.prod(self.row_shape)) * self.dtype.itemsize

    def read_into(self, out: np.ndarray, shard: int, rows: np.ndarray) -> None:
        """Fill ``out`` (C-contiguous, len(rows) rows) with the sorted, unique ``rows`` of ``shard``."""
        offset = self.offsets[shard]
        if offset is None:
            out[...] = read_rows(self.hdf5[shard][self.name], rows)
            return
        file, filled = self.raw[shard], 0
        for start, stop in runs(rows):
            n = int(np.searchsorted(rows[filled:], stop))
            if n == stop - start:  # every row of the run: read in place
                file.read_into(out[filled:filled + n], offset + start * self.row_bytes)
            else:
                span = np.empty((stop - start, *self.row_shape), dtype=self.dtype)
                file.read_into(span, offset + start * self.row_bytes)
                out[filled:filled + n] = span[rows[filled:filled + n] - start]
            filled += n



class ShardDataset(torch.utils.data.Dataset):
    """Rows of one split across shards. ``index[i]`` = (shard, row) of item i, in shard order.

    ``stage`` ("pretrain", "finetune" or None for both) picks the fields read (``STAGE_FIELDS``, plus
    the frames). Small fields are held in RAM; frames are read per batch through ``read``, from files
    opened on first use in each process, at most ``max_open_files`` open per file set (``OpenFiles``), or
    held in RAM too with ``in_memory`` (True, False or "auto": when they fit in
    ``IN_MEMORY_AUTO_BYTES``). ``attach`` adds a per-shard sidecar array (the LM cache), read the same way.
    """

    def __init__(self, paths: Sequence[str | Path], split: str | None = None, labelled: bool = False,
                 max_open_files: int = MAX_OPEN_FILES, stage: str | None = None,
                 in_memory: bool | str = False):
        if stage not in STAGE_FIELDS:
            raise ValueError(f"stage must be one of {[k for k in STAGE_FIELDS if k]} or None, got {stage!r}")
        self.stage = stage
        # Half of the open-file budget for HDF5 handles, half for plain ones (RowSource).
        self.limit = max(max_open_files // 2, 1)
        self.files, self.raw = OpenFiles(paths, self.limit), OpenFiles(paths, self.limit, opener=RawFile)
        self.paths = self.files.paths
        self.fields = {**STAGE_FIELDS[stage], **FRAME_MASKS}
        index, small, first = [], {key: [] for key in self.fields}, None
        for i, path in enumerate(self.paths):
            attrs = read_attrs(path)
            if first is None:
                first = attrs
            elif (attrs["audio_columns"], attrs["visual_columns"], attrs["vocab_sha1"]) != (
                first["audio_columns"], first["visual_columns"], first["vocab_sha1"]):
                raise ValueError(f"{path}: features or tokenizer differ from {self.paths[0]}")
            elif (mixed := model_difference(first.get("models"), attrs.get("models"))) is not None:
                raise ValueError(f"shards of mixed model versions, {self.paths[0]} vs {path}: {mixed}")
            if attrs["n"] == 0:
                continue
            with h5py.File(path, "r") as f:
                keep = np.ones(attrs["n"], dtype=bool) if split is None else f["split"].asstr()[()] == split
                if labelled:
                    keep &= ~np.isnan(f["label"][()])
                rows = np.flatnonzero(keep)
                index.append(np.stack([np.full(len(rows), i), rows], axis=1))
                for key, name in self.fields.items():
                    small[key].append(f[name][()][rows])
        self.index = np.concatenate(index) if index else np.zeros((0, 2), dtype=np.int64)
        self.small = {key: np.concatenate(v) for key, v in small.items() if v}
        self.attrs = first or {}
        self.sources = {key: RowSource(name, self.files, self.raw) for key, name in FRAMES.items()} \
            if self.paths else {}
        self.memory: dict[str, np.ndarray] = {}
        if in_memory == "auto":
            in_memory = self.frame_bytes() <= IN_MEMORY_AUTO_BYTES
        if in_memory:
            self.load_into_memory()

    def __len__(self) -> int:
        return len(self.index)

    def attach(self, key: str, paths: Sequence[str | Path], name: str) -> None:
        """Read ``name`` of ``paths[s]`` (one file per shard, rows aligned with the shard's) as ``key``."""
        if len(paths) != len(self.paths):
            raise ValueError(f"{len(paths)} files for {len(self.paths)} shards")
        self.sources[key] = RowSource(name, OpenFiles(paths, self.limit), OpenFiles(paths, self.limit, RawFile))
        if self.memory:
            self.memory[key] = self._read_files(key, np.arange(len(self)))

    def frame_bytes(self) -> int:
        """Bytes of the frame arrays (and attached arrays) of this dataset's rows."""
        return sum(source.row_bytes for source in self.sources.values()) * len(self)

    def load_into_memory(self) -> None:
        """Hold every frame array of this dataset's rows in RAM (reads then copy no file data)."""
        self.memory = {key: self._read_files(key, np.arange(len(self))) for key in self.sources}
        self.close()

    def _read_files(self, key: str, items: np.ndarray) -> np.ndarray:
        """``key`` of ``items``, which are in file order ((shard, row) ascending, as ``index`` is)."""
        source = self.sources[key]
        out = np.empty((len(items), *source.row_shape), dtype=source.dtype)
        shards = self.index[items, 0]
        bounds = np.flatnonzero(np.r_[True, shards[1:] != shards[:-1], True]) if len(items) else [0]
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            source.read_into(out[lo:hi], int(shards[lo]), self.index[items[lo:hi], 1])
        return out

    def read(self, items: Sequence[int] | np.ndarray) -> dict[str, torch.Tensor]:
        """A batch of ``items`` in the given order: the stage's fields, frames with their masks, and
        attached arrays; token ids as int64. One read per array per run of nearby rows per shard."""
        items = np.asarray(items, dtype=np.int64)
        order = np.lexsort((self.index[items, 1], self.index[items, 0]))  # file order, for the reads
        batch: dict[str, torch.Tensor] = {}
        for key in self.sources:
            if key in self.memory:
                values = self.memory[key][items]
            else:
                values = np.empty((len(items), *self.sources[key].row_shape), dtype=self.sources[key].dtype)
                values[order] = self._read_files(key, items[order])
            batch[key] = torch.from_numpy(values)
        for key in self.fields:
            values = self.small[key][items]
            if key in FRAME_MASKS:
                frames = batch[key.removesuffix("_mask")].shape[1]
                batch[key] = torch.from_numpy(np.arange(frames) < values[:, None])
            else:
                batch[key] = torch.from_numpy(values.astype(np.int64) if values.dtype == np.int32 else values)
        return batch

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        return {key: value[0] for key, value in self.read([item]).items()}

    def close(self) -> None:
        """Close this process's open shard files (they reopen on the next read)."""
        for files in {id(f): f for s in self.sources.values() for f in (s.hdf5, s.raw)}.values():
            files.close()
        self.files.close()
        self.raw.close()

    def text_lengths(self) -> np.ndarray:
        """Real tokens of every item in the text the stage reads (pretraining: masked; else: raw)."""
        key = "attention_mask" if self.stage == "pretrain" else "raw_attention_mask"
        return self.small[key].sum(axis=1).astype(np.int64) if len(self) else np.zeros(0, np.int64)

    def clip_id(self, item: int) -> str:
        shard, row = self.index[item]
        return self.files[int(shard)]["id"].asstr()[row]
