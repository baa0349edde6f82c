"""MMSA interop: MMSA's processed feature pickles in, our shards out as one.

Most researchers have MOSI/MOSEI only as the MMSA framework's processed pickles (thuiar/MMSA,
``MOSI/Processed/aligned_50.pkl`` and ``unaligned_50.pkl``; MMSA-FET writes the same layout)::

    {"train" | "valid" | "test": {
        "id":                (N,) str "<video_id>$_$<clip_id>"
        "raw_text":          (N,) str, the gold transcript
        "audio":             (N, T_a, d_a) float32, -inf in some frames (MOSI d_a = 5, MOSEI 74)
        "vision":            (N, T_v, d_v) float32 (MOSI d_v = 20, MOSEI 35)
        "audio_lengths", "vision_lengths"   (N,) int: frames [0, length) are real (unaligned files;
                             MMSA-FET leaves them out of aligned files, where MMSA's models count
                             the text_bert mask instead, as we then do)
        "regression_labels": (N,) float, sentiment in [-3, 3]
        "text", "text_bert": BERT features / token ids + mask + segment ids: not read, our own
                             tokenizer and LM read raw_text
        ...}}

MMSA's loader (src/MMSA/data_loader.py) sets audio's -inf to 0 and does no other cleaning; its models
pack each sequence to its length. We do the same, so the shards hold what MMSA's models see.

Import (dataset layout ``mmsa_pickle``). The pickle is unpickled once per dataset, by ``kebr plan``:
the reader ``read_mmsa_pickle`` gives the plan its clips (ids ``<video_id>/<clip_id>`` as ``mmsa_raw``
names them, the video as the speaker, the pickle's split), and ``write_plan_arrays`` writes each
shard's real frames beside its plan TSV (``plan/<shard>.mmsa.h5``). Per shard, ``import_shard`` (rule
``mmsa_import``, in place of asr / audio_features / visual_features) turns them into the stage outputs
``kebr assemble`` joins: the gold text goes through the English filter, masking and tokenizer as usual,
the arrays become the shard's features with their real lengths and the pickle's frame counts. A clip
whose arrays hold NaN or infinities (other than audio's -inf) or no frame is skipped with the reason.

Pickles are code: unpickling calls whatever the file names. So a pickle is read only when its
dataset says ``trust_pickle: true``, and then through an unpickler that resolves nothing but numpy's
array constructors (``SAFE_GLOBALS``); a file that asks for anything else is refused.

Bounded unpickling. Even those constructors can ask for any amount of memory: a 150-byte pickle
can call ``_reconstruct(ndarray, (10**7,), object)`` (ten million Python objects) or ask for a
7.45 GiB array. So each constructor is wrapped: before it allocates, the array's dtype and shape
are checked and its bytes charged to a budget of ``ARRAY_BYTES_PER_FILE_BYTE`` (2) x the file's
size. Why 2: a pickle is not compressed, so every byte of every array is in the file, once
(protocol >= 3: the raw bytes; protocol 5 reads them in place) or, in protocol 2, as a latin-1
string that ``_codecs.encode`` turns into bytes which the array then copies (both charged, hence
2x). More than that can only come from a shape the file's bytes cannot fill or from one buffer
referenced many times through the pickle's memo, which numpy's pickling never writes. Object
dtypes are refused outright: MMSA's layout holds numbers and fixed-width strings (MMSA-FET's
``np.array`` of its strings is ``<U``), and an object array's elements are whatever the file builds.
A refusal names the file and the array (its place among the file's arrays, shape and dtype).

What the budget cannot bound (Python containers, at most some 60 bytes per opcode byte) is bounded
by the job's memory: the plan unpickles in a supervised worker process (kebr/worker.py,
``PickleWork``) under the plan job's ``mem_mb`` (the rule's value plus ``PICKLE_MB_PER_MB`` per MB
of pickle), so a pickle that needs more than the job has fails the plan with its peak, and the
plan's own process never holds the arrays: the worker answers the plan's two requests (the clips,
then each shard's arrays) from one unpickling.

Export (``kebr export-mmsa``): a dataset's labelled clips in the same layout, unaligned (each stream
keeps its frames and lengths), so MMSA's own baselines run on our features. ``text_bert`` holds the
shards' token ids, mask and zero segment ids (every uncased BERT shares that vocabulary), ``text`` the
last hidden states of the shards' LM over them (MMSA's own files hold BERT-base's), ids
``<video>$_$<clip>`` with the clip id split at its last ``/``. Frames past a clip's length are zeros.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import math
import os
import pickle
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterator, Sequence

import h5py
import numpy as np

from kebr import paths
from kebr.asr import gold_transcript
from kebr.clips import Clip, SkipKind
from kebr.config import untrusted_pickle_message
from kebr.fingerprints import stage_fingerprint
from kebr.journal import write_stage_output
from kebr.worker import StopSignals, Worker, job_memory_limit_mb

log = logging.getLogger("kebr")

SPLITS = ("train", "valid", "test")
ID_SEPARATOR = "$_$"
MODALITIES = ("audio", "vision")  # the pickle's names; our shards call vision "visual"
REQUIRED_KEYS = ("id", "raw_text", "audio", "vision", "regression_labels")

# The globals a pickle of numpy arrays, strings and numbers needs (numpy 1.x and 2.x module names;
# _codecs.encode is how protocol 2 writes bytes, and bytes() its empty bytes: an empty array's data).
# Anything else is refused before it is called.
SAFE_GLOBALS = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"), ("__builtin__", "bytes"),
}

# SHA-256 of the feature files MMSA releases (its README), to name the file a user imports.
MMSA_RELEASES = {
    "78e0f8b5ef8ff71558e7307848fc1fa929ecb078203f565ab22b9daab2e02524": "MOSI/Processed/unaligned_50.pkl",
    "d3994fd25681f9c7ad6e9c6596a6fe9b4beb85ff7d478ba978b124139002e5f9": "MOSI/Processed/aligned_50.pkl",
    "ad8b23d50557045e7d47959ce6c5b955d8d983f2979c7d9b7b9226f6dd6fec1f": "MOSEI/Processed/unaligned_50.pkl",
    "45eccfb748a87c80ecab9bfac29582e7b1466bf6605ff29d3b338a75120bf791": "MOSEI/Processed/aligned_50.pkl",
}


# What a pickle's arrays may take together, per byte of the file (module docstring: why 2).
ARRAY_BYTES_PER_FILE_BYTE = 2
PICKLE_TIMEOUT_S = 3600.0  # unpickling MOSEI (GBs) from a slow network file system takes minutes


def _size(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n} bytes"


class _ArrayBudget:
    """The bytes a pickle's arrays may still take; ``charge`` refuses an array before it exists."""

    def __init__(self, path: str, file_bytes: int) -> None:
        self.path, self.file_bytes = path, file_bytes
        self.left = ARRAY_BYTES_PER_FILE_BYTE * file_bytes
        self.arrays = 0  # arrays made so far: the k-th is "array #k" in messages

    def new_array(self) -> str:
        self.arrays += 1
        return f"array #{self.arrays}"

    def charge(self, shape: Any, dtype: Any, name: str) -> None:
        """Refuse ``name`` (e.g. "array #3") of this shape and dtype, or take its bytes off the budget."""
        if isinstance(shape, int):
            shape = (shape,)
        what = f"{self.path}: {name} of the pickle (shape {shape!r}, dtype {dtype})"
        if not (isinstance(shape, tuple) and all(type(d) is int and d >= 0 for d in shape)):
            raise pickle.UnpicklingError(f"{what}: the shape is not a tuple of counts")
        dtype = np.dtype(dtype)  # a pickle's dtypes are built already (numpy.dtype): no allocation here
        if dtype.hasobject:
            raise pickle.UnpicklingError(f"{what} holds Python objects; an MMSA feature pickle holds numbers and "
                                         "fixed-width strings only, so kebr does not build it")
        nbytes = math.prod(shape) * dtype.itemsize  # Python ints: no overflow
        if nbytes > self.left:
            raise pickle.UnpicklingError(
                f"{what} would take {_size(nbytes)}, more than this {_size(self.file_bytes)} file can carry: its "
                f"arrays may take {ARRAY_BYTES_PER_FILE_BYTE}x its size together ({_size(self.left)} left), as an "
                "uncompressed pickle holds every byte of its arrays; kebr does not allocate it")
        self.left -= nbytes


def _guarded(budget: _ArrayBudget, module: str, name: str, real: Any) -> Any:
    """``real`` (one of SAFE_GLOBALS) with its allocation charged to ``budget`` first."""
    if name == "ndarray":
        class Array(np.ndarray):
            """numpy.ndarray as the pickle sees it: its constructor and its ``__setstate__`` (how
            pickle's BUILD fills the empty array ``_reconstruct`` made) are charged first."""

            def __new__(cls, shape: Any, dtype: Any = float, *args: Any, **kwargs: Any) -> "Array":
                name = budget.new_array()
                budget.charge(shape, dtype, name)
                array = super().__new__(cls, shape, dtype, *args, **kwargs)
                array.kebr_name = name
                return array

            def __setstate__(self, state: Any) -> None:
                # (version, shape, dtype, is_fortran, rawdata), or the older form without version
                if isinstance(state, tuple) and len(state) in (4, 5):
                    budget.charge(state[-4], state[-3], getattr(self, "kebr_name", "an array"))
                else:
                    raise pickle.UnpicklingError(f"{budget.path}: an array's state is not numpy's")
                super().__setstate__(state)

        return Array
    if name == "_reconstruct":
        def reconstruct(subtype: Any, shape: Any, dtype: Any) -> Any:
            name = budget.new_array()
            budget.charge(shape, dtype, name)
            array = real(subtype, shape, dtype)
            if isinstance(array, np.ndarray) and type(array) is not np.ndarray:  # the guarded subclass
                array.kebr_name = name  # for its __setstate__'s message
            return array
        return reconstruct
    if name == "_frombuffer":
        def frombuffer(buffer: Any, dtype: Any, shape: Any, order: Any) -> Any:
            budget.charge(shape, dtype, budget.new_array())
            return real(buffer, dtype, shape, order)
        return frombuffer
    if name == "scalar":
        def scalar(dtype: Any, *args: Any) -> Any:
            budget.charge((), dtype, "a numpy scalar")
            return real(dtype, *args)
        return scalar
    if (module, name) == ("_codecs", "encode"):
        def encode(text: Any, encoding: str = "utf-8", *args: Any) -> bytes:
            # protocol 2's bytes: a latin-1 string, one byte per character (charged before encoding)
            if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
                raise pickle.UnpicklingError(f"{budget.path}: the pickle encodes with {encoding!r}; numpy's "
                                             "protocol-2 pickles use latin1 only")
            budget.charge((len(text),), "u1", "a latin-1 byte string (protocol 2's array data)")
            return real(text, encoding)
        return encode
    if name == "bytes":
        def empty_bytes(*args: Any) -> bytes:
            if args:  # bytes(n) would allocate n zero bytes; protocol 2 calls it only for b""
                raise pickle.UnpicklingError(f"{budget.path}: the pickle calls bytes{args!r}; numpy's protocol-2 "
                                             "pickles call it without arguments only")
            return b""
        return empty_bytes
    return real  # numpy.dtype: a dtype allocates nothing; the arrays made of it are charged


class _ArrayUnpickler(pickle.Unpickler):
    def __init__(self, file: Any, path: str, file_bytes: int) -> None:
        super().__init__(file)
        self.budget = _ArrayBudget(path, file_bytes)

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in SAFE_GLOBALS:
            return _guarded(self.budget, module, name, super().find_class(module, name))
        raise pickle.UnpicklingError(f"{self.budget.path}: the pickle asks for {module}.{name}; an MMSA feature "
                                     "file needs only numpy arrays and plain Python values, so kebr does not load it")


def _plain(value: Any) -> Any:
    """The unpickled structure with the budget's array subclass turned back into numpy.ndarray."""
    if isinstance(value, np.ndarray):
        return value.view(np.ndarray) if type(value) is not np.ndarray else value
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return value


def _strings(values: Any) -> list[str]:
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]


def _check_split(part: Any, split: str, path: Path) -> dict[str, Any]:
    """One split in our terms: ids, texts, labels, and per modality the array and real lengths."""
    if not isinstance(part, dict):
        raise ValueError(f"{path}: split {split!r} is a {type(part).__name__}, not a dict")
    missing = [k for k in REQUIRED_KEYS if k not in part]
    if missing:
        raise ValueError(f"{path}: split {split!r} lacks {missing} (it has {sorted(part)})")
    ids, texts = _strings(part["id"]), _strings(part["raw_text"])
    labels = np.asarray(part["regression_labels"], dtype=np.float64).reshape(-1)
    n = len(ids)
    if len(texts) != n or len(labels) != n:
        raise ValueError(f"{path}: split {split!r} has {n} ids, {len(texts)} raw_text, {len(labels)} labels")
    bad = np.flatnonzero(~np.isfinite(labels))
    if len(bad):
        raise ValueError(f"{path}: split {split!r} clip {ids[bad[0]]}: label {labels[bad[0]]} is not finite")
    out: dict[str, Any] = {"id": ids, "raw_text": texts, "label": labels}
    for m in MODALITIES:
        array = np.asarray(part[m])
        if array.ndim != 3 or len(array) != n:
            raise ValueError(f"{path}: split {split!r}: {m} must be (N={n}, T, d), got {array.shape}")
        if f"{m}_lengths" in part:
            lengths = np.asarray(part[f"{m}_lengths"]).reshape(-1).astype(np.int64)
        elif "text_bert" in part:  # aligned files: a stream is as long as its text (MMSA's models)
            lengths = np.asarray(part["text_bert"])[:, 1, :].sum(axis=1).astype(np.int64)
        else:
            raise ValueError(f"{path}: split {split!r} has neither {m}_lengths nor text_bert to count real frames")
        if len(lengths) != n or (lengths < 0).any():
            raise ValueError(f"{path}: split {split!r}: {m} lengths must be N={n} counts >= 0")
        out[m], out[f"{m}_lengths"] = array, np.minimum(lengths, array.shape[1])  # MMSA-FET clips them too
    return out


@functools.lru_cache(maxsize=1)
def _load(path: str, mtime_ns: int, size: int) -> dict[str, Any]:
    """The checked content of a pickle, kept for the process: the plan reads it twice (clips, arrays)."""
    with open(path, "rb") as f:
        data = _plain(_ArrayUnpickler(f, path, size).load())
    if not isinstance(data, dict) or not all(s in data for s in SPLITS):
        keys = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{path}: an MMSA feature pickle is a dict with train, valid and test; got {keys}")
    parts = {s: _check_split(data[s], s, Path(path)) for s in SPLITS}
    for m in MODALITIES:
        widths = {parts[s][m].shape[2] for s in SPLITS}
        if len(widths) > 1:
            raise ValueError(f"{path}: {m} width differs between splits: {sorted(widths)}")
    return parts


def load_pickle(path: str | Path, trusted: bool) -> dict[str, dict[str, Any]]:
    """The pickle's train/valid/test, checked (see ``_check_split``), in this process (bounded:
    ``_ArrayBudget``); refused unless ``trusted``. The plan reads pickles through ``PickleReader``."""
    if not trusted:
        raise ValueError(untrusted_pickle_message(path))
    stat = Path(path).stat()
    return _load(str(path), stat.st_mtime_ns, stat.st_size)


class PickleWork:
    """What the plan's supervised worker does (kebr/worker.py ``Worker``): unpickle one file once,
    then answer the plan's requests from it. A request is ``{"op": "rows"}`` (the reader's rows) or
    ``{"op": "arrays", "clips": [...], "plan_dir": ...}`` (``_write_arrays``); the answer holds its
    result, or ``{"error": exception}`` for the plan to raise (a refused or malformed file)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.parts: dict[str, dict[str, Any]] | None = None

    def meta(self) -> dict[str, Any]:
        return {}

    def process(self, requests: list[dict[str, Any]], attempt: int) -> list[dict[str, Any]]:
        answers = []
        for request in requests:
            try:
                if self.parts is None:  # the first request unpickles, inside the task: under the memory watch
                    self.parts = load_pickle(self.path, trusted=True)
                if request["op"] == "rows":
                    answers.append({"rows": list(_rows(Path(self.path), self.parts))})
                else:
                    answers.append(_write_arrays(Path(self.path), self.parts, request["clips"],
                                                 Path(request["plan_dir"])))
            except Exception as exc:  # the file's fault, raised again in the plan's process
                answers.append({"error": exc})
        return answers


class PickleReader:
    """One pickle, unpickled by a supervised worker (``PickleWork``) under ``job_mem_mb`` (the plan
    job's memory, shared with this process; None: no limit)."""

    def __init__(self, path: str | Path, job_mem_mb: int | None) -> None:
        self.path = Path(path)
        # StopSignals not entered: a signal to the plan job ends it as before, and the worker with it
        self.worker = Worker("kebr.mmsa:PickleWork", (str(path),), StopSignals(), "pickle", job_mem_mb=job_mem_mb)

    def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        outcome = self.worker.run([request], PICKLE_TIMEOUT_S)
        if outcome.status != "done":
            raise ValueError(f"{self.path}: unpickling it {outcome.reason}")
        answer = outcome.records[0]
        if "error" in answer:  # the file's fault: a ValueError, which `kebr` reports as one line
            error = answer["error"]
            if isinstance(error, ValueError):
                raise error
            text = str(error)
            message = text if text.startswith(str(self.path)) else f"{self.path}: {type(error).__name__}: {text}"
            raise ValueError(message) from error
        return answer

    def close(self) -> None:
        self.worker.close()


_READERS: dict[Path, PickleReader] = {}  # the plan's open readers (``supervised_pickle``), by resolved path


@contextlib.contextmanager
def supervised_pickle(path: str | Path, job_mem_mb: int | None) -> Iterator[PickleReader]:
    """Within the block, the pickle at ``path`` is read by one worker under the job's memory: the
    plan's clips (``read_mmsa_pickle``) and then its arrays (``write_plan_arrays``) come from one
    unpickling."""
    key = Path(path).resolve()  # the config's spelling ("./x.pkl") and the reader's (Path) are one file
    reader = _READERS[key] = PickleReader(path, job_mem_mb)
    try:
        yield reader
    finally:
        del _READERS[key]
        reader.close()


@contextlib.contextmanager
def _reader(path: Path) -> Iterator[PickleReader]:
    """The plan's open reader of ``path``, or one for this call alone (under the process's cgroup
    limit, if any: outside a plan job there is no configured memory)."""
    if (key := Path(path).resolve()) in _READERS:
        yield _READERS[key]
        return

    with supervised_pickle(path, job_memory_limit_mb(None)) as reader:
        yield reader


def clip_id_of(mmsa_id: str) -> tuple[str, str]:
    """``<video_id>$_$<clip_id>`` -> (video id, our clip id ``<video_id>/<clip_id>``)."""
    video, sep, clip = mmsa_id.rpartition(ID_SEPARATOR)
    if not sep or not video or not clip:
        raise ValueError(f"MMSA id {mmsa_id!r} is not <video_id>{ID_SEPARATOR}<clip_id>")
    return video, f"{video}/{clip}"


def mmsa_id_of(clip_id: str, speaker: str) -> str:
    """Our clip id as an MMSA id: split at its last ``/`` (``<speaker>$_$<clip_id>`` if it has none)."""
    head, sep, tail = clip_id.rpartition("/")
    return f"{head}{ID_SEPARATOR}{tail}" if sep else f"{speaker}{ID_SEPARATOR}{clip_id}"


def _rows(path: Path, parts: dict[str, dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for split, part in parts.items():
        for k, (mmsa_id, text, label) in enumerate(zip(part["id"], part["raw_text"], part["label"])):
            video, clip_id = clip_id_of(mmsa_id)
            yield {"clip_id": clip_id, "video": None, "audio": None, "text": text, "label": float(label),
                   "split": split, "speaker": video, "source": f"{path} {split}[{k}]"}


def read_mmsa_pickle(path: Path, trusted: bool) -> Iterator[dict[str, Any]]:
    """The ingest reader of layout ``mmsa_pickle``: one row per clip, its split the pickle's, read by
    the supervised worker (``supervised_pickle``)."""
    if not trusted:
        raise ValueError(untrusted_pickle_message(path))
    with _reader(path) as reader:
        rows = reader.ask({"op": "rows"})["rows"]
    yield from rows


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()


def write_plan_arrays(dataset: dict[str, Any], clips: Sequence[Clip], plan_dir: Path) -> list[Path]:
    """Per shard, ``plan/<shard>.mmsa.h5``: each clip's real frames as read (ragged: ``<m>`` rows of all
    clips in plan order, ``<m>_offsets`` (n + 1,)), and the pickle's identity and frame counts; written
    by the supervised worker, which holds the arrays."""
    path = Path(dataset["pickle"])
    if not dataset["trust_pickle"]:
        raise ValueError(untrusted_pickle_message(path))
    with _reader(path) as reader:
        answer = reader.ask({"op": "arrays", "clips": list(clips), "plan_dir": str(plan_dir)})
    log.info("%s: %d clips in %d shards (sha256 %s, %s)", path, len(clips), len(answer["written"]), answer["sha256"],
             answer["release"] or "not an MMSA release")
    return [Path(p) for p in answer["written"]]


def _write_arrays(path: Path, parts: dict[str, dict[str, Any]], clips: Sequence[Clip],
                  plan_dir: Path) -> dict[str, Any]:
    """``write_plan_arrays`` in the worker: the files written, and the pickle's sha256 and release."""
    where = {clip_id_of(i)[1]: (s, k) for s, part in parts.items() for k, i in enumerate(part["id"])}
    sha256 = sha256_of(path)
    source = {"path": str(path.resolve()), "sha256": sha256, "release": MMSA_RELEASES.get(sha256)}
    by_shard: dict[str, list[Clip]] = defaultdict(list)
    for clip in clips:
        by_shard[clip.shard].append(clip)
    written = []
    for shard, members in sorted(by_shard.items()):
        out = Path(paths.shard_arrays(plan_dir, shard))
        tmp = out.with_name(out.name + ".tmp")
        with h5py.File(tmp, "w") as f:
            f.attrs["mmsa_pickle"] = json.dumps(source, sort_keys=True)
            f.create_dataset("id", data=np.array([c.clip_id for c in members], dtype=object),
                             dtype=h5py.string_dtype("utf-8"))
            for m in MODALITIES:
                rows = [parts[s][m][k, : parts[s][f"{m}_lengths"][k]] for s, k in (where[c.clip_id] for c in members)]
                f.attrs[f"{m}_frames"] = max(parts[s][m].shape[1] for s in SPLITS)
                f.create_dataset(m, data=np.concatenate(rows).astype(np.float32, copy=False))
                f.create_dataset(f"{m}_offsets", data=np.cumsum([0] + [len(r) for r in rows], dtype=np.int64))
        os.replace(tmp, out)
        written.append(str(out))
    return {"written": written, "sha256": sha256, "release": source["release"]}


def _clean(frames: np.ndarray, stream: str) -> np.ndarray:
    """MMSA's loader's cleaning (audio -inf -> 0); any other non-finite value or no frame is an error."""
    if stream == "audio":
        frames = np.where(np.isneginf(frames), np.float32(0), frames)
    if len(frames) == 0:
        raise ValueError(f"{stream}: the MMSA pickle gives this clip no frame")
    if not np.isfinite(frames).all():
        raise ValueError(f"{stream}: the MMSA pickle holds NaN or infinite values for this clip")
    return frames


def import_shard(clips: Sequence[Clip], arrays: Path, out_asr: Path, out_audio: Path, out_visual: Path) -> None:
    """One shard's transcripts (the gold raw_text) and features (the pickle's arrays) as the stage
    outputs ``kebr assemble`` reads, in plan order."""
    # The stage reads no config key (STAGE_KEYS["mmsa_import"] is empty): its fingerprint is constant.
    fingerprint = stage_fingerprint({}, "mmsa_import")
    transcripts = [{"clip_id": c.clip_id, **gold_transcript(c.text or "").to_json()} for c in clips]
    write_stage_output(out_asr, {"stage": "asr", "backend": "mmsa_pickle", "model": None, "fingerprint": fingerprint},
                       transcripts)
    with h5py.File(arrays, "r") as f:
        row = {clip_id: i for i, clip_id in enumerate(f["id"].asstr()[()])}
        source = json.loads(f.attrs["mmsa_pickle"])
        for m, stage, out in (("audio", "audio", out_audio), ("vision", "visual", out_visual)):
            data, offsets = f[m], f[f"{m}_offsets"][()]
            records = []
            for clip in clips:
                i = row[clip.clip_id]
                try:
                    frames = _clean(data[offsets[i]: offsets[i + 1]], stage)
                    records.append({"clip_id": clip.clip_id, "features": frames})
                except ValueError as exc:
                    records.append({"clip_id": clip.clip_id, "error": str(exc), "kind": SkipKind.INVALID})
            meta = {"stage": stage, "columns": [f"mmsa_{m}_{j:03d}" for j in range(data.shape[1])],
                    "max_frames": int(f.attrs[f"{m}_frames"]), "mmsa_pickle": source, "fingerprint": fingerprint}
            write_stage_output(out, meta, records)


# ------------------------------------------------------------------------------------------------
# export


def _text_features(text_model: str, ids: np.ndarray, attention: np.ndarray, batch_size: int,
                   device: str) -> np.ndarray:
    """Last hidden states (N, L, d_t) float32 of the shards' LM over their token ids (MMSA's ``text``)."""
    import torch

    from kebr.model.encoder import TextEncoder  # torch: only the export pays for it

    encoder = TextEncoder(text_model, freeze=True).eval().to(device)
    out = np.zeros((len(ids), ids.shape[1], encoder.hidden_size), dtype=np.float32)
    with torch.no_grad():
        for start in range(0, len(ids), batch_size):
            batch = slice(start, start + batch_size)
            hidden = encoder(torch.from_numpy(ids[batch].astype(np.int64)).to(device),
                             torch.from_numpy(attention[batch].astype(np.int64)).to(device))
            out[batch] = hidden.float().cpu().numpy()
    return out


def export_mmsa(shard_paths: Sequence[str | Path], out: str | Path, batch_size: int = 64,
                device: str = "cpu") -> dict[str, int]:
    """Write the labelled clips of ``shard_paths`` as an MMSA feature pickle at ``out`` (atomically);
    returns the clip count per split and of unlabelled clips left out."""
    from kebr.shards import ShardDataset  # torch: only the export pays for it

    attrs = ShardDataset(shard_paths).attrs  # checks that every shard has the same features and vocabulary
    columns: dict[str, list[np.ndarray]] = defaultdict(list)
    unlabelled = 0
    for path in shard_paths:
        with h5py.File(path, "r") as f:
            if len(f["id"]) == 0:
                continue
            keep = np.isfinite(f["label"][()])
            unlabelled += int((~keep).sum())
            for name, key in (("id", "id"), ("speaker", "speaker"), ("split", "split"), ("raw_text", "text/raw")):
                columns[name].append(np.array(_strings(f[key].asstr()[()]), dtype=object)[keep])
            for name, key in (("label", "label"), ("input_ids", "text/raw_input_ids"),
                              ("attention", "text/raw_attention_mask"), ("audio", "audio/features"),
                              ("audio_lengths", "audio/lengths"), ("vision", "visual/features"),
                              ("vision_lengths", "visual/lengths")):
                columns[name].append(f[key][()][keep])
    data = {name: np.concatenate(parts) for name, parts in columns.items()}
    if not len(data.get("id", ())):
        raise ValueError(f"no labelled clip in {len(shard_paths)} shards: MMSA's layout needs labels")
    text = _text_features(attrs["text_model"], data["input_ids"], data["attention"], batch_size, device)
    text_bert = np.stack([data["input_ids"], data["attention"], np.zeros_like(data["input_ids"])], axis=1)
    result: dict[str, dict[str, Any]] = {}
    for split in SPLITS:
        rows = np.flatnonzero(data["split"] == split)
        result[split] = {
            "id": np.array([mmsa_id_of(c, s) for c, s in zip(data["id"][rows], data["speaker"][rows])], dtype=str),
            "raw_text": np.array(list(data["raw_text"][rows]), dtype=str),
            "audio": data["audio"][rows].astype(np.float32),
            "vision": data["vision"][rows].astype(np.float32),
            "audio_lengths": data["audio_lengths"][rows].astype(np.int64),
            "vision_lengths": data["vision_lengths"][rows].astype(np.int64),
            "regression_labels": data["label"][rows].astype(np.float32),
            "text": text[rows],
            "text_bert": text_bert[rows].astype(np.float32),
        }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with tmp.open("wb") as f:
        pickle.dump(result, f, protocol=4)
    os.replace(tmp, out)
    return {**{s: len(result[s]["id"]) for s in SPLITS}, "unlabelled_left_out": unlabelled}
