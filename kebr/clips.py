"""The clip record every stage passes around, and how a failure on one clip is classified.

Three kinds of failure, three outcomes (docs/corpora.md "Bad input, crashes and kills"):

- ``ClipError``: something about the clip's CONTENT (an empty or unreadable file, no audio or video
  stream, silence, no face, no speech, not English, too long). The clip is skipped for good with a
  human reason and a stable short ``kind`` (``SkipKind``); clips.tsv counts clips by kind.
- a transient error (``is_transient``): I/O errors of a network file system and GPU errors. They say
  nothing about the clip, so they are retried with backoff and, if they persist, fail the job
  (Snakemake retries it later). A clip whose transient error persists in two job runs is skipped as
  ``persistent_error`` with the error (kebr/stages/supervise.py; the journal counts the runs), so no single
  file can block its shard forever.
- Content versus storage is decided by evidence. FFmpeg reports many broken files as EIO (a
  Matroska file cut to 58 bytes raises ``OSError(errno=5)`` in PyAV), which would otherwise be
  retried as a storage error. An EIO that FFmpeg reports (a PyAV error naming its file) is a
  content error when a plain ``os.stat`` and a read of every byte of that file succeed: the storage
  demonstrably serves the file, so the bytes themselves are bad. An EIO from anything else (Python's
  own reads, an error without a file name), or one whose file does not stat or read, stays transient.
- anything else is ``unexpected``: recorded for the clip (kind ``unexpected``) but counted, and a
  shard where more than ``max_error_fraction`` of the clips hit one fails loudly. Such records are
  not final: a rerun retries them.
"""

from __future__ import annotations

import enum
import errno
import hashlib
import json
import os
import re
import stat
import sys
from dataclasses import dataclass, fields


class SkipKind(enum.StrEnum):
    """Every kind of skip a stage records, with what it means (``description``). The value is a
    stable short name for counting and filtering (clips.tsv ``kind``, clips_summary.tsv); the human
    reason beside it says the details. A StrEnum, so records and tables hold the plain name."""

    description: str

    def __new__(cls, value: str, description: str) -> SkipKind:
        member = str.__new__(cls, value)
        member._value_ = value
        member.description = description
        return member

    NOT_FOUND = "not_found", "the media file does not exist"
    ZERO_BYTE = "zero_byte", "the media file is empty"
    UNREADABLE = "unreadable", "FFmpeg cannot open or decode the file (truncated, not media, not a regular file)"
    NO_MEDIA = "no_media", "the plan gives neither an audio nor a video file"
    NO_AUDIO_STREAM = "no_audio_stream", "the file has no audio stream"
    NO_VIDEO_STREAM = "no_video_stream", "the file has no video stream (or the clip has no video)"
    TOO_LONG = "too_long", "longer than stages.max_clip_seconds"
    TOO_SHORT = "too_short", "too short for the configured features (eGeMAPS)"
    SILENCE = "silence", "digital silence (peak below -80 dBFS)"
    NO_FACE = "no_face", "no face found in any sampled frame"
    BAD_OPENFACE_CSV = "bad_openface_csv", "the OpenFace CSV is missing or malformed"
    EMPTY_TRANSCRIPT = "empty_transcript", "no word in the transcript"
    NO_SPEECH = ("no_speech", "no model hears speech: the signal below -60 dBFS, or the language model's no-speech "
                 "token and the ASR agree (without a language model, Whisper's no-speech rule; kebr/language.py)")
    LOW_CONFIDENCE = "low_confidence", "ASR confidence too low for English (another language or heavy noise)"
    NOT_ENGLISH = "not_english", "the language ID or the transcript says not English"
    PERSISTENT_ERROR = ("persistent_error",
                        "a storage or GPU error that persisted through the retries of two job runs")
    CRASHED_WORKER = ("crashed_worker",
                      "the clip killed the stage's worker process (segfault, abort, out-of-memory kill)")
    TIMEOUT = "timeout", "the clip took longer than stages.clip_timeout_s"
    TOO_LARGE = ("too_large", "the clip made the stage's worker use more memory than the job has (resources.mem_mb); "
                 "the reason gives the peak")
    INVALID = "invalid", "another problem with the clip's content (the reason says which)"
    UNEXPECTED = "unexpected", "any other error: counted, and fails the shard above max_error_fraction"


# errno values that mean "the storage or network hiccupped", not "this file is bad".
TRANSIENT_ERRNOS = frozenset({
    errno.EIO, errno.ESTALE, errno.ETIMEDOUT, errno.EAGAIN, errno.EBUSY, errno.ENOTCONN, errno.ECONNRESET,
    errno.ECONNABORTED, errno.ECONNREFUSED, errno.ENETDOWN, errno.ENETUNREACH, errno.ENETRESET,
    errno.EHOSTDOWN, errno.EHOSTUNREACH, errno.EREMOTEIO, errno.ENOLINK, errno.ECOMM,
})
# Kinds whose records a restarted job retries instead of keeping (kebr/journal.py is_final): the
# environment may have been fixed since.
RETRIED_KINDS = frozenset({SkipKind.UNEXPECTED, SkipKind.PERSISTENT_ERROR})
READ_CHUNK = 1 << 20
# GPU failures (torch, CTranslate2, cuDNN, cuBLAS, NCCL); a fresh worker process may succeed.
_DEVICE_ERROR = re.compile(r"\bCUDA\b|\bcuda\b|cuDNN|CUDNN|cuBLAS|CUBLAS|NCCL|device-side assert")


class ClipError(Exception):
    """A clip that cannot be processed: ``str(exc)`` is the skip reason, ``kind`` its SkipKind."""

    def __init__(self, reason: str, kind: SkipKind = SkipKind.INVALID) -> None:
        super().__init__(reason)
        if not isinstance(kind, SkipKind):  # a plain string would be a kind nothing checked
            raise TypeError(f"a skip kind is a SkipKind member, not {kind!r}")
        self.kind = kind


def is_device_error(exc: BaseException) -> bool:
    """A GPU error (CUDA, cuDNN, cuBLAS, NCCL, CUDA out of memory): its process may be unusable."""
    if type(exc).__name__ in ("OutOfMemoryError", "AcceleratorError"):  # torch.cuda OOM; torch >= 2.8 CUDA errors
        return True
    return isinstance(exc, RuntimeError) and bool(_DEVICE_ERROR.search(str(exc)))


def _is_ffmpeg_error(exc: BaseException) -> bool:
    av = sys.modules.get("av")  # an FFmpeg error exists only once PyAV is imported; clips.py never imports it
    return av is not None and isinstance(exc, av.error.FFmpegError)


def reads_whole(path: str | os.PathLike[str]) -> int | None:
    """The size of ``path`` when a plain ``os.stat`` says it is a regular file and every byte of it
    reads without an error (the storage serves it), else None."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None
        size = 0
        with open(path, "rb", buffering=0) as f:
            while chunk := f.read(READ_CHUNK):
                size += len(chunk)
        return size
    except OSError:
        return None


def corrupt_content_size(exc: BaseException) -> int | None:
    """For an EIO that FFmpeg reported on a file that stats and reads whole: the file's size (the
    error is the file's content). None for every other error (see the module docstring)."""
    if not (isinstance(exc, OSError) and exc.errno == errno.EIO and _is_ffmpeg_error(exc) and exc.filename):
        return None
    return reads_whole(exc.filename)


def is_transient(exc: BaseException) -> bool:
    """An I/O error of the storage (EIO, ESTALE, timeouts...) or a GPU error: retry, never skip.
    FFmpeg's EIO on a file that stats and reads whole is the file's content, not transient."""
    if isinstance(exc, ClipError):
        return False
    if isinstance(exc, OSError) and exc.errno in TRANSIENT_ERRNOS:
        return corrupt_content_size(exc) is None
    return isinstance(exc, TimeoutError) or is_device_error(exc)


@dataclass(frozen=True)
class Clip:
    clip_id: str
    video: str | None = None
    audio: str | None = None
    text: str | None = None
    label: float | None = None
    split: str = "train"
    speaker: str = ""
    shard: str = ""
    # "<bytes> <mtime_ns>" of the media when planned ("" = none, or not there): a file replaced in
    # place changes its plan row, so a replan reruns its shard (docs/configuration.md).
    video_stat: str = ""
    audio_stat: str = ""

    @property
    def media(self) -> str:
        """The file the audio comes from: the audio file if given, else the video."""
        path = self.audio or self.video
        if path is None:
            raise ClipError("no media: neither audio nor video given", kind=SkipKind.NO_MEDIA)
        return path

    @property
    def has_gold_text(self) -> bool:
        return self.text is not None and bool(self.text.strip())

    @property
    def kept_whole(self) -> bool:
        """A labelled valid/test clip with its gold transcript: never dropped for a missing modality
        (the test set must stay the corpus's official one; see kebr/stages/assemble.py run_assemble)."""
        return self.label is not None and self.split in ("valid", "test") and self.has_gold_text

    def to_row(self) -> dict[str, str]:
        # getattr, not dataclasses.asdict: asdict deep-copies every value (most of a 1M-clip plan's time)
        values = ((f.name, getattr(self, f.name)) for f in fields(self))
        return {k: "" if v is None else str(v) for k, v in values}

    @classmethod
    def from_row(cls, row: dict[str, str]) -> "Clip":
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = row.get(f.name, "")
            if f.name == "label":
                values[f.name] = float(raw) if raw not in ("", None) else None
            elif f.name in ("video", "audio", "text"):
                values[f.name] = raw if raw not in ("", None) else None
            else:
                values[f.name] = raw or ""
        return cls(**values)  # type: ignore[arg-type]


def media_stat(path: str | None) -> str:
    """``"<bytes> <mtime_ns>"`` of a media file (or frame folder), "" when there is none or it
    cannot be stat'ed."""
    if not path:
        return ""
    try:
        st = os.stat(path)
    except (OSError, ValueError):  # ValueError: a NUL in a path from a manifest
        return ""
    return f"{st.st_size} {st.st_mtime_ns}"


def input_digest(clip: Clip) -> str:
    """What a stage's record of ``clip`` is made from: a digest of the clip's plan row and of the
    size and mtime its media have NOW. A journaled record whose digest differs is redone
    (kebr/journal.py): the plan row was edited, or a file was replaced since, replanned or not."""
    values = [sorted(clip.to_row().items()), media_stat(clip.video), media_stat(clip.audio)]
    return hashlib.sha256(json.dumps(values).encode("ascii")).hexdigest()[:16]


def describe_error(exc: BaseException) -> str:
    """The skip reason for an exception raised while processing one clip. A skip caused by FFmpeg's
    EIO on a healthy file says that the evidence put the blame on the content, not the storage."""
    text = str(exc) if isinstance(exc, ClipError) else f"{type(exc).__name__}: {exc}"
    cause = exc.__cause__ if isinstance(exc, ClipError) else exc
    size = None if cause is None else corrupt_content_size(cause)
    if size is not None and isinstance(cause, OSError):
        text += (f"; FFmpeg reported an I/O error, but {cause.filename} stats and reads whole ({size} bytes), "
                 "so its content is corrupt, not the storage")
    return text


def error_kind(exc: BaseException) -> SkipKind:
    """The SkipKind of an exception that is not transient."""
    if isinstance(exc, ClipError):
        return exc.kind
    return SkipKind.UNREADABLE if corrupt_content_size(exc) is not None else SkipKind.UNEXPECTED


def skip_record(exc: BaseException) -> dict[str, str]:
    """``{"error": reason, "kind": kind}`` for a failure on one clip; a transient one is re-raised
    (it says nothing about the clip: the stage retries it or fails the job)."""
    if is_transient(exc):
        raise exc
    return {"error": describe_error(exc), "kind": error_kind(exc)}


def read_kind(value: str, where: str) -> SkipKind:
    """A kind read back from a file (a journal, a stage output, a status table, clips.tsv) as its
    SkipKind: a kind this code does not know fails loudly, naming ``where``."""
    try:
        return SkipKind(value)
    except ValueError:
        raise ValueError(f"{where}: unknown skip kind {value!r}, not one of kebr.clips.SkipKind "
                         f"({', '.join(SkipKind)})") from None
