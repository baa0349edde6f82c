"""Per-shard stage state that survives any kill: the journal, and the compact stage output.

The journal
-----------
Each per-shard stage (asr, audio, visual) appends JSON lines to ``<output>.journal`` and flushes and
fsyncs each one. The stage's parent process is the only writer; its worker child never writes. Lines:

    {"journal": 2, "stage": "audio", "fingerprint": "..."}    the header: always the first line
    {"meta": {...}}                the output's meta (e.g. feature columns), once the worker has said it
    {"start": ["c1", ...], "inputs": [...]}   written BEFORE the worker touches these clips (one clip, or one
                                   ASR batch), with each clip's input digest
    {"close": ["c1", ...], "why": "interrupted" | "split"}   they left the worker without a record
    {"transient": ["c1", ...], "reason": "...", "inputs": [...]}   a transient error on these clips
                                   outlasted the retries and failed the job (one line per job run)
    {"clip_id": "c1", ..., "input": "..."}   one finished clip: its result, or its skip with "error"
                                   and "kind", and its input digest
    {"records": [{...}, ...]}      a whole batch's records on one line, so a batch lands all or nothing

Arrays travel base64-encoded, so the journal needs nothing but the standard library and numpy.

The rule for a restarted job (how a clip that kills its job is told from a job that was killed)
------------------------------------------------------------------------------------------------
A group of clips (one ``start`` line) is SETTLED when every clip of it has a record, or when a
``close`` line follows it. A group whose ``start`` is followed by neither (the next ``start`` or the
end of the file comes first) was in flight when the whole job died without a word: SIGKILL of the
job, a node failure, or a cgroup out-of-memory kill that took the parent too. Each such death is one
STRIKE against the group. A crash of the worker alone never gets here: the parent sees it at once
and records the clip as ``crashed_worker`` with the signal or exit code (kebr/worker.py).

- A group with one strike runs again exactly as it ran (the same clips, the same batch), so a job
  killed at a random point reruns to the same output as an uninterrupted run. One strike cannot
  tell a poison clip from a node that went away, and skipping on it would lose good clips.
- Two strikes: a batch is split and its clips run one at a time; a single clip is skipped as
  ``crashed_worker``, "crashed the worker (the whole job died twice while this clip was being
  processed; no exit status)". So a clip that takes its whole job down costs at most two job deaths
  on its own (plus two in its ASR batch), and the shard always completes.
- SIGTERM and SIGINT (Snakemake's Ctrl-C, SLURM preemption and time limits send SIGTERM first) are
  not crashes: the parent closes the in-flight group as ``interrupted`` before it exits, so the
  group carries no strike and is simply run again.
- Records of kind ``unexpected`` or ``persistent_error`` are not final (``kebr.clips.RETRIED_KINDS``):
  a restarted job drops them and retries those clips (the environment may have been fixed since).
- Transient errors (storage, GPU) that outlast a job's retries fail the job; each such job run is
  counted per group (``transient``). A group that failed so once runs one clip at a time, and a
  single clip whose transient error persists in its second job run is skipped as
  ``persistent_error`` with the error and the count (kebr/stages/supervise.py), so no file blocks its shard.
- Every record, start and transient line carries the input digest of its clips
  (``kebr.clips.input_digest``: the clip's plan row and its media's size and mtime when the job
  started). A record, strike or transient count made under another digest than the clip's now is
  STALE and dropped, so the clip is redone: after a job dies mid-shard, a corrected transcript or
  label, a repointed path or a file replaced in place (replanned or not) never pairs with work done
  on the old input. Clips added to the shard have no record; records of removed clips are unused.
- A journal written under another fingerprint (``kebr.fingerprints.stage_fingerprint``: the config keys
  the stage reads), by another stage, or in another format is discarded: records made under another
  config never mix with new ones.

A torn last line (the kill came mid-write) is cut off before anything new is appended. The journal
sits beside the stage's output under a name Snakemake does not own, so Snakemake's clean-up of
incomplete outputs leaves it alone; the stage deletes it once its output is written.

The stage output
----------------
``write_stage_output`` writes one HDF5 file per shard and stage, atomically (temporary name, then
rename): the meta as a JSON attribute, the clips' records without their arrays as gzip-compressed
JSON lines, and each array-valued field of the records concatenated over the clips in one gzip +
byte-shuffle compressed dataset with row offsets. Stage outputs stay on disk for 1,100 shards, so they are
compact (bench/stage_outputs.py measures the bytes per 1,000 clips) and byte-identical for the same
records (no HDF5 timestamps).
"""

from __future__ import annotations

import base64
import json
import logging
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from kebr.clips import RETRIED_KINDS, read_kind

log = logging.getLogger("kebr")

JOURNAL_FORMAT = 2
STRIKES_TO_SKIP = 2  # whole-job deaths with a clip in flight before it is skipped as crashed_worker
TRANSIENT_RUNS_TO_SKIP = 2  # job runs a clip's transient error persists in before it is skipped
_ARRAY = "__ndarray__"


def encode_array(array: np.ndarray) -> dict[str, Any]:
    array = np.ascontiguousarray(array, dtype=np.float32)
    return {_ARRAY: list(array.shape), "b64": base64.b64encode(array.tobytes()).decode("ascii")}


def decode_array(data: dict[str, Any]) -> np.ndarray:
    return np.frombuffer(base64.b64decode(data["b64"]), dtype=np.float32).reshape(data[_ARRAY]).copy()


def _dumps(value: Any) -> str:
    return json.dumps(value, default=lambda v: encode_array(v) if isinstance(v, np.ndarray) else str(v))


def _loads(line: str) -> Any:
    return json.loads(line, object_hook=lambda d: decode_array(d) if _ARRAY in d else d)


def _read_back(record: dict[str, Any], where: str | Path) -> dict[str, Any]:
    """A record read from a journal or stage output, a skip's kind as its SkipKind (an unknown one fails here)."""
    if "error" in record:
        record["kind"] = read_kind(record["kind"], f"{where}: clip {record['clip_id']!r}")
    return record


def is_final(record: dict[str, Any]) -> bool:
    """Whether a journaled record stands on restart (an unexpected or persistent error is retried instead)."""
    return record.get("kind") not in RETRIED_KINDS


class Journal:
    """The journal of one stage on one shard (see the module docstring for the rules).

    After opening: ``records`` (clip id -> final record), ``meta`` (or None), ``strikes`` (each
    unsettled group of clip ids -> whole-job deaths it was in flight for), ``transient`` (each group
    -> job runs its transient error failed), ``stale`` (clips whose record was made from another
    input and is redone), ``discarded`` (why an existing journal was thrown away, or None).

    ``inputs``: each clip's input digest now (``kebr.clips.input_digest``); without it (tests of
    the kill rules alone) every record counts as current and nothing new carries a digest.
    """

    def __init__(self, path: str | Path, stage: str, fingerprint: str, inputs: dict[str, str] | None = None) -> None:
        self.path = Path(path)
        self.inputs = inputs
        self.stale: set[str] = set()
        self.header = {"journal": JOURNAL_FORMAT, "stage": stage, "fingerprint": fingerprint}
        self.records: dict[str, dict[str, Any]] = {}
        self.meta: dict[str, Any] | None = None
        self.strikes: dict[tuple[str, ...], int] = {}
        self.transient: dict[tuple[str, ...], int] = {}
        self.discarded: str | None = None
        good_bytes = self._load() if self.path.exists() else 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("r+b" if good_bytes else "wb")
        if good_bytes:
            self._file.truncate(good_bytes)  # cut a torn last line off before appending
            self._file.seek(good_bytes)
        else:
            self._write(self.header)

    def _load(self) -> int:
        """Read the journal; returns the byte length of its whole lines (0: start a new one)."""
        data = self.path.read_bytes()
        lines, offset, good = [], 0, 0
        for raw in data.split(b"\n")[:-1]:  # the part after the last newline is torn or empty
            offset += len(raw) + 1
            try:
                lines.append(_loads(raw.decode("utf-8")))
                good = offset
            except (json.JSONDecodeError, UnicodeDecodeError):
                self.discarded = f"unreadable line {len(lines) + 1}"
                break
        if self.discarded is None and (not lines or lines[0] != self.header):
            found = lines[0] if lines else {}
            self.discarded = (f"written by {found.get('stage')} with fingerprint {found.get('fingerprint')} "
                              f"(format {found.get('journal')}), not {self.header['stage']} with "
                              f"{self.header['fingerprint']}")
        if self.discarded is not None:
            log.warning("%s: discarding the journal (%s); the shard starts over", self.path, self.discarded)
            return 0
        settled: set[str] = set()
        pending: tuple[str, ...] | None = None
        pending_current = True  # whether `pending` ran on the clips' inputs of now
        strikes: dict[tuple[str, ...], int] = {}
        for event in lines[1:]:
            if "start" in event:
                if pending is not None and pending_current:  # the job died with `pending` in flight
                    strikes[pending] = strikes.get(pending, 0) + 1
                pending = tuple(event["start"])
                pending_current = self._current(pending, event.get("inputs"))
            elif "close" in event:
                pending = None
            elif "transient" in event:
                group = tuple(event["transient"])
                if self._current(group, event.get("inputs")):
                    self.transient[group] = self.transient.get(group, 0) + 1
            elif "meta" in event:
                self.meta = event["meta"]
            else:
                for record in event.get("records", [event]):
                    record = _read_back(record, self.path)
                    clip_id, made_from = record["clip_id"], record.pop("input", None)
                    settled.add(clip_id)
                    current = self._current((clip_id,), [made_from])
                    if current and is_final(record):
                        self.records[clip_id] = record
                    else:
                        self.records.pop(clip_id, None)
                    if current:
                        self.stale.discard(clip_id)
                    else:
                        self.stale.add(clip_id)
                if pending is not None and settled.issuperset(pending):
                    pending = None
        if pending is not None and pending_current:
            strikes[pending] = strikes.get(pending, 0) + 1
        self.strikes = {group: n for group, n in strikes.items() if not set(group) <= self.records.keys()}
        return good

    def _current(self, clip_ids: tuple[str, ...], made_from: list[str | None] | None) -> bool:
        """Whether work on these clips was done on their inputs of now (see the module docstring)."""
        if self.inputs is None:
            return True
        return made_from is not None and len(made_from) == len(clip_ids) and all(
            self.inputs.get(c) == m for c, m in zip(clip_ids, made_from))

    def _tagged(self, value: dict[str, Any], clip_ids: list[str]) -> dict[str, Any]:
        return value if self.inputs is None else {**value, "inputs": [self.inputs[c] for c in clip_ids]}

    def _with_input(self, record: dict[str, Any]) -> dict[str, Any]:
        return record if self.inputs is None else {**record, "input": self.inputs[record["clip_id"]]}

    def _write(self, value: Any) -> None:
        self._file.write((_dumps(value) + "\n").encode("utf-8"))
        self._file.flush()
        os.fsync(self._file.fileno())

    def __contains__(self, clip_id: str) -> bool:
        return clip_id in self.records

    def set_meta(self, meta: dict[str, Any]) -> None:
        if meta != self.meta:
            self.meta = meta
            self._write({"meta": meta})

    def start(self, clip_ids: list[str]) -> None:
        """Before the worker touches these clips."""
        self._write(self._tagged({"start": list(clip_ids)}, clip_ids))

    def close(self, clip_ids: list[str], why: str) -> None:
        """These clips left the worker without records (``interrupted`` by a signal, or ``split``
        from a batch that crashed to run one by one): no strike against them."""
        self._write({"close": list(clip_ids), "why": why})

    def transient_failed(self, clip_ids: list[str], reason: str) -> int:
        """A transient error on these clips outlasted the retries (the job fails or the clip is
        skipped next); returns the job runs it has now failed for this group."""
        group = tuple(clip_ids)
        self.transient[group] = self.transient.get(group, 0) + 1
        self._write(self._tagged({"transient": list(clip_ids), "reason": reason}, clip_ids))
        return self.transient[group]

    def append(self, record: dict[str, Any]) -> None:
        self.records[record["clip_id"]] = record
        self._write(self._with_input(record))

    def append_batch(self, records: list[dict[str, Any]]) -> None:
        """A batch's records on one line: after a kill, either all of them are there or none."""
        for record in records:
            self.records[record["clip_id"]] = record
        self._write({"records": [self._with_input(r) for r in records]})

    def close_file(self) -> None:
        self._file.close()

    def remove(self) -> None:
        self.close_file()
        self.path.unlink(missing_ok=True)


def read_journal_counts(path: str | Path) -> dict[str, int]:
    """Clips a running stage has finished, by kind ("" = ok), for `kebr status`. Reads the journal
    without opening it for writing and without its rules: a progress view, not a resume."""
    counts: dict[str, int] = {}
    latest: dict[str, str] = {}
    with Path(path).open("rb") as f:
        for raw in f:
            if not raw.endswith(b"\n"):
                break
            try:
                event = json.loads(raw)
            except json.JSONDecodeError:
                break
            for record in event.get("records", [event] if "clip_id" in event else []):
                latest[record["clip_id"]] = _read_back(record, path)["kind"] if "error" in record else ""
    for kind in latest.values():
        counts[kind] = counts.get(kind, 0) + 1
    return counts


# ---------------------------------------------------------------------------------------------
# The stage output

OUTPUT_FORMAT = 1


def _put(group: h5py.Group, name: str, data: np.ndarray, **kw: Any) -> None:
    kw["track_times"] = False  # the same records give the same bytes
    if data.shape[0]:  # 2-D arrays: 8,192 rows a chunk; bytes: 256 kB
        rows = 1 << 18 if data.ndim == 1 else 8192
        kw.update(chunks=(min(len(data), rows),) + data.shape[1:], compression="gzip", compression_opts=4,
                  shuffle=data.ndim > 1)
    group.create_dataset(name, data=data, **kw)


def write_stage_output(path: str | Path, meta: dict[str, Any], records: list[dict[str, Any]]) -> Path:
    """A finished stage's output, atomically: ``meta`` and one record per clip in plan order.

    Array-valued fields (numpy arrays, e.g. ``features``) are stored concatenated per field; every
    record's array of one field must have the same trailing shape and is stored as float32.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    array_fields = sorted({k for r in records for k, v in r.items() if isinstance(v, np.ndarray)})
    with h5py.File(tmp, "w") as f:
        f.attrs["format"] = OUTPUT_FORMAT
        f.attrs["meta"] = json.dumps(meta, sort_keys=True)
        # The records as compressed JSON lines (HDF5 cannot compress variable-length strings).
        plain = "".join(json.dumps({k: v for k, v in r.items() if k not in array_fields}) + "\n" for r in records)
        _put(f, "records", np.frombuffer(plain.encode("utf-8"), dtype=np.uint8))
        for name in array_fields:
            arrays = [np.asarray(r[name], dtype=np.float32) if name in r else None for r in records]
            shapes = {a.shape[1:] for a in arrays if a is not None}
            if len(shapes) != 1:
                raise ValueError(f"{path}: records' {name!r} arrays differ in shape: {sorted(shapes)}")
            (trailing,) = shapes
            group = f.create_group(f"arrays/{name}")
            lengths = [0 if a is None else len(a) for a in arrays]
            _put(group, "offsets", np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))
            _put(group, "present", np.array([a is not None for a in arrays], dtype=bool))
            present = [a for a in arrays if a is not None]
            _put(group, "data", np.concatenate(present) if present else np.zeros((0, *trailing), np.float32))
    os.replace(tmp, path)
    return path


def read_stage_output(path: str | Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(meta, records by clip id) of a file written by ``write_stage_output``; arrays as numpy."""
    with h5py.File(path, "r") as f:
        if f.attrs.get("format") != OUTPUT_FORMAT:
            raise ValueError(f"{path}: not a kebr stage output of format {OUTPUT_FORMAT}")
        meta = json.loads(f.attrs["meta"])
        records = [_read_back(json.loads(line), path)
                   for line in f["records"][()].tobytes().decode("utf-8").splitlines()]
        for name, group in f.get("arrays", {}).items():
            offsets, present, data = group["offsets"][()], group["present"][()], group["data"][()]
            for i, record in enumerate(records):
                if present[i]:
                    record[name] = data[offsets[i] : offsets[i + 1]]
    return meta, {r["clip_id"]: r for r in records}
