"""Decode and write media through FFmpeg's libraries (PyAV).

Every reader turns an unreadable input into a ``ClipError`` with a reason that names what was wrong
(missing file, zero bytes, no audio stream, no decodable frame) and its kind, so the calling stage
records a skip instead of crashing its shard. An I/O error of the storage itself (EIO, ESTALE: see
``kebr.clips.is_transient``) is NOT turned into a skip: it propagates so the stage retries. Audio is
never decoded past ``max_seconds`` (config ``stages.max_clip_seconds``), whatever the container says.
Video is decoded only as far as its sampled frames need (``read_frames``), on one decoder thread unless
asked for more. Video can also be a folder of frame images (VoxCeleb1's face tracks).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import itertools
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from kebr.clips import ClipError, SkipKind, is_transient

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")

log = logging.getLogger("kebr")


def _open(path: str | Path) -> av.container.InputContainer:
    p = Path(path)
    if not p.exists():
        raise ClipError(f"media: file not found: {p}", kind=SkipKind.NOT_FOUND)
    if not p.is_file():  # a FIFO would block the decoder forever, a device would stream forever
        raise ClipError(f"media: not a regular file: {p}", kind=SkipKind.UNREADABLE)
    if p.stat().st_size == 0:
        raise ClipError(f"media: zero-byte file: {p}", kind=SkipKind.ZERO_BYTE)
    try:
        return av.open(str(p))
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        if is_transient(exc):  # EIO, ESTALE...: the storage, not the file; the stage retries
            raise
        raise ClipError(f"media: not a readable media file ({type(exc).__name__}: {exc})",
                        kind=SkipKind.UNREADABLE) from exc


def _container_duration(container: av.container.InputContainer) -> float | None:
    """Seconds the container says it lasts (its header, else its longest stream); None if unknown."""
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    durations = [float(s.duration * s.time_base) for s in container.streams
                 if s.duration is not None and s.time_base is not None and s.duration > 0]
    return max(durations) if durations else None


def probe_duration(path: str | Path) -> float | None:
    """The media's duration in seconds from its container, without decoding; None when the
    container does not say (or ``path`` is a frame folder). Raises ClipError if it cannot be opened."""
    if Path(path).is_dir():
        return None
    with _open(path) as container:
        return _container_duration(container)


def too_long(duration_s: float | None, max_seconds: float | None) -> ClipError | None:
    """The skip for a clip whose container says it is longer than ``max_seconds``, else None."""
    if duration_s is not None and max_seconds is not None and duration_s > max_seconds:
        return ClipError(f"media: {duration_s:.0f} s is longer than max_clip_seconds={max_seconds:g}", kind=SkipKind.TOO_LONG)
    return None


def load_audio(path: str | Path, sample_rate: int, max_seconds: float | None = None) -> np.ndarray:
    """The whole audio track, mono float32 in [-1, 1], resampled to ``sample_rate``.

    ``max_seconds``: a clip whose container says it is longer is refused before decoding, and
    decoding stops as soon as it passes ``max_seconds`` of samples whatever the container said (a
    header can lie), so memory never grows past ``max_seconds`` of audio.
    """
    limit = None if max_seconds is None else int(max_seconds * sample_rate)
    with _open(path) as container:
        if not container.streams.audio:
            raise ClipError("media: no audio stream", kind=SkipKind.NO_AUDIO_STREAM)
        claimed = _container_duration(container)
        if (error := too_long(claimed, max_seconds)) is not None:
            raise error
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="fltp", layout="mono", rate=sample_rate)
        chunks: list[np.ndarray] = []
        decoded = 0
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray()[0])
                    decoded += len(chunks[-1])
                if limit is not None and decoded > limit:
                    said = "no duration" if claimed is None else f"{claimed:.0f} s"
                    raise ClipError(f"media: audio runs past max_clip_seconds={max_seconds:g} (the container "
                                    f"says {said}); decoding stopped there", kind=SkipKind.TOO_LONG)
        except av.error.FFmpegError as exc:
            if is_transient(exc):
                raise
            # A truncated file decodes up to the damage; keep what was decoded if anything was.
            if not chunks:
                raise ClipError(f"media: audio decode failed ({exc})", kind=SkipKind.UNREADABLE) from exc
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray()[0])
    if not chunks:
        raise ClipError("media: audio stream has no samples", kind=SkipKind.UNREADABLE)
    return np.concatenate(chunks).astype(np.float32, copy=False)


# Video sampling. The rule: sample times 0, 1/fps, 2/fps... (summed step by step); each takes the first
# frame, in presentation order, at or after it (within SAMPLE_TOLERANCE_S), and a frame covers every
# sample time up to its own. Only the picked frames are needed, so read_frames reads the packets first
# (no decoding), plans the picks from their timestamps, and tells the decoder per packet what it may skip.
SAMPLE_TOLERANCE_S = 1e-6


@dataclass
class DecodeStats:
    """What one ``read_frames`` call did with the video's packets (for tests and benches)."""

    packets: int = 0  # video packets read from the container
    sent: int = 0  # packets given to the decoder; the others were dropped whole (GOPs with no pick, the tail)
    decoded: int = 0  # frames the decoder returned: skipped non-reference frames never come out
    planned: bool = False  # picks planned from packet timestamps (False: no timestamps, every frame decoded)
    replanned: bool = False  # the decoder's real picks differed from the plan, so the clip was decoded in full


class _Sampler:
    """The sampling rule over frames in presentation order: how many sample times each frame covers."""

    def __init__(self, fps: float, max_frames: int) -> None:
        self.step, self.max_frames = 1.0 / fps, max_frames
        self.next_time = 0.0
        self.taken = 0

    @property
    def full(self) -> bool:
        return self.taken >= self.max_frames

    def covers(self, time_s: float) -> list[float]:
        """The sample times (none or more) the frame shown at ``time_s`` is picked for."""
        times = []
        while time_s + SAMPLE_TOLERANCE_S >= self.next_time and self.taken < self.max_frames:
            times.append(self.next_time)
            self.taken += 1
            self.next_time += self.step
        return times

    def last_sample_s(self) -> float:
        t = 0.0
        for _ in range(self.max_frames - 1):
            t += self.step  # summed as covers() sums it, so the float is the same
        return t


def _seconds(ticks: int, time_base: Fraction) -> float:
    return float(ticks) * time_base.numerator / time_base.denominator  # as PyAV computes Frame.time


@dataclass
class _Packet:
    packet: av.Packet
    needed: bool = False  # holds a picked frame
    action: str = "decode"  # "decode"; "nonref": the decoder may skip it if it is not a reference; "drop"


def _read_packets(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
                  last_sample_s: float) -> tuple[list[av.Packet], bool, av.error.FFmpegError | None]:
    """The video packets in decode order up to the one that settles the last sample time's pick,
    whether they can be planned (every packet has a pts and a dts), and the error that broke off reading.

    Decode timestamps never decrease and no frame is shown before it is decoded (pts >= dts), so once
    a packet's dts passes the smallest pts seen at or after the last sample time, no later packet can
    take that pick. A container that breaks off (a truncated file) ends the list there.
    """
    packets: list[av.Packet] = []
    last_pick: int | None = None
    try:
        for packet in container.demux(stream):
            if packet.size == 0:  # demux's end-of-stream marker
                continue
            packets.append(packet)
            if packet.pts is None or packet.dts is None:
                return packets, False, None
            if not packet.is_discard and _seconds(packet.pts, stream.time_base) + SAMPLE_TOLERANCE_S >= last_sample_s:
                last_pick = packet.pts if last_pick is None else min(last_pick, packet.pts)
            if last_pick is not None and packet.dts > last_pick:
                break
    except av.error.FFmpegError as exc:
        if is_transient(exc):
            raise
        return packets, True, exc
    return packets, True, None


def _plan(packets: list[av.Packet], time_base: Fraction, fps: float, max_frames: int) -> tuple[list[_Packet], set[int]]:
    """Each packet with its action, and the pts of the planned picks.

    Packets marked discard (before an MP4 edit list's start) are decoded, as they may be references,
    but never shown, so they are never picked. A GOP (a keyframe and the packets after it in decode
    order, up to the next keyframe) is dropped whole when it holds no pick and the stream's GOPs are
    closed: no GOP has leading frames (decoded after its keyframe but shown before it), the frames
    that may refer back across a keyframe (H.264's decoder also will not restart cleanly on an
    open GOP's keyframe). Packets after the last pick in decode order are dropped.
    """
    plan = [_Packet(p) for p in packets]
    sampler = _Sampler(fps, max_frames)
    picks: set[int] = set()
    for pts, i in sorted((p.pts, i) for i, p in enumerate(packets) if not p.is_discard):
        if sampler.full:
            break
        if sampler.covers(_seconds(pts, time_base)):
            picks.add(pts)
            plan[i].needed = True
    needed = [p.needed for p in plan]
    last_needed = max((i for i, n in enumerate(needed) if n), default=-1)
    starts = [i for i, p in enumerate(packets) if p.is_keyframe] + [len(packets)]
    gops = list(zip(starts, starts[1:]))
    closed = not any(packets[j].pts < packets[a].pts for a, b in gops for j in range(a + 1, b))
    for a, b in gops if closed else ():
        if b < len(packets) and not any(needed[a:b]):
            for p in plan[a:b]:
                p.action = "drop"
    for i, p in enumerate(plan):
        if i > last_needed:
            p.action = "drop"
        elif not p.needed and p.action == "decode":
            p.action = "nonref"
    return plan, picks


def _decode(stream: av.video.stream.VideoStream, plan: Iterable[_Packet], sampler: _Sampler,
            stats: DecodeStats) -> tuple[list[float], list[np.ndarray], set[int]]:
    """Decode ``plan`` in order, picking frames by the sampling rule: (times, frames, picked pts).

    A decode error (a damaged file) keeps what was decoded before it when anything was."""
    context = stream.codec_context
    # One converter for the clip on the decoder's threads: to_ndarray(format=...) builds a new swscale
    # context for every frame (most of the conversion's cost) and starts a thread per core.
    rgb = VideoReformatter()
    threads = max(1, context.thread_count)
    times: list[float] = []
    frames: list[np.ndarray] = []
    picked: set[int] = set()

    def take(decoded: list[av.VideoFrame]) -> None:
        for frame in decoded:
            stats.decoded += 1
            if frame.pts is None or sampler.full:
                continue
            # In the stream's time base: frames flushed out of the decoder carry none of their own.
            if covered := sampler.covers(_seconds(frame.pts, stream.time_base)):
                image = rgb.reformat(frame, format="rgb24", threads=threads).to_ndarray()
                # A frame may cover several sample times when the source rate is below `fps`.
                times.extend(covered)
                frames.extend([image] * len(covered))
                picked.add(frame.pts)

    try:
        for item in plan:
            if item.action == "drop":
                continue
            context.skip_frame = "NONREF" if item.action == "nonref" else "DEFAULT"
            stats.sent += 1
            take(context.decode(item.packet))
            if sampler.full:
                break
        if not sampler.full:
            take(context.decode(None))  # the frames the decoder still holds (B-frame reordering, threads)
    except av.error.FFmpegError as exc:
        if is_transient(exc):
            raise
        if not frames:
            raise ClipError(f"media: video decode failed ({exc})", kind=SkipKind.UNREADABLE) from exc
    return times, frames, picked


def read_frames(path: str | Path, fps: float, max_frames: int, threads: int = 1,
                stats: DecodeStats | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Frames sampled at ``fps`` (the first frame at or after each sample time), at most ``max_frames``.

    Returns (timestamps in seconds (T,), RGB uint8 frames (T, H, W, 3)). Sampling by presentation
    time, not by frame index, makes variable-frame-rate and odd-rate video (24000/1001, 120 fps)
    come out on the same time grid as constant-rate video.

    Only what the picks need is decoded: packets are planned from their timestamps (see ``_plan``);
    a packet with no pick is decoded only if it is a reference frame (the decoder's ``skip_frame``
    NONREF, which leaves every other frame's pixels as they were), whole GOPs with no pick are not
    read into the decoder, and decoding stops after the last pick. The picks are those of decoding
    every frame: when the decoder's picks differ from the plan (timestamps that lie), the clip is
    decoded again in full. ``threads``: decoder threads (1: none started; more only when the job has
    the cores). ``stats``, when given, is filled in.
    """
    p = Path(path)
    if p.is_dir():
        return _read_frame_folder(p, max_frames)
    stats = DecodeStats() if stats is None else stats
    result = _read_video(p, fps, max_frames, threads, stats, plan=True)
    if result is None:
        stats.replanned = True
        log.warning("media: %s: the decoded frames differ from the plan made from packet timestamps; "
                    "decoding every frame", p)
        result = _read_video(p, fps, max_frames, threads, stats, plan=False)
    times, frames = result
    if not frames:
        raise ClipError("media: no decodable video frame", kind=SkipKind.UNREADABLE)
    return np.asarray(times, dtype=np.float64), np.stack(frames)


def _read_video(path: Path, fps: float, max_frames: int, threads: int, stats: DecodeStats,
                plan: bool) -> tuple[list[float], list[np.ndarray]] | None:
    """One pass of read_frames: planned (None when the decoder's picks differ from the plan) or not."""
    with _open(path) as container:
        if not container.streams.video:
            raise ClipError("media: no video stream", kind=SkipKind.NO_VIDEO_STREAM)
        stream = container.streams.video[0]
        context = stream.codec_context
        if context is None:  # a damaged header can leave FFmpeg no codec for the stream
            raise ClipError("media: the video stream has no decoder (damaged header)", kind=SkipKind.UNREADABLE)
        # FFmpeg's default (0) starts a thread per core in every job; one thread starts none.
        context.thread_count = max(1, threads)
        if threads > 1:
            context.thread_type = "AUTO"
        sampler = _Sampler(fps, max_frames)
        packets: list[av.Packet] = []
        plannable, error = False, None
        if plan:
            packets, plannable, error = _read_packets(container, stream, sampler.last_sample_s())
        picks = None
        sent_before = stats.sent
        if plannable:
            items, picks = _plan(packets, stream.time_base, fps, max_frames)
            stats.planned = True
            stats.packets += len(packets)
        else:  # decode everything, reading on from where planning stopped
            stats.planned = False
            items = (_Packet(p) for p in itertools.chain(packets, container.demux(stream)) if p.size)
        times, frames, picked = _decode(stream, items, sampler, stats)
        if not plannable:
            stats.packets += stats.sent - sent_before
        if not frames and error is not None:
            raise ClipError(f"media: video decode failed ({error})", kind=SkipKind.UNREADABLE) from error
    if picks is not None and picked != picks:
        return None
    return times, frames


def _read_frame_folder(folder: Path, max_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """A folder of face-track images (VoxCeleb1 ``unzippedIntervalFaces``), in name order."""
    files = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)[:max_frames]
    if not files:
        raise ClipError(f"media: no images in frame folder {folder}", kind=SkipKind.UNREADABLE)
    frames = []
    for f in files:
        with _open(f) as container:
            frame = next(container.decode(video=0), None)
            if frame is None:
                raise ClipError(f"media: unreadable image {f.name}", kind=SkipKind.UNREADABLE)
            frames.append(frame.to_ndarray(format="rgb24"))
    heights = {im.shape[:2] for im in frames}
    if len(heights) > 1:
        raise ClipError(f"media: frame folder {folder} mixes image sizes {sorted(heights)}",
                        kind=SkipKind.UNREADABLE)
    # Frame folders carry no timing; their index is their time step.
    return np.arange(len(frames), dtype=np.float64), np.stack(frames)


_M_PERTURB = -6  # malloc.h
_PERTURB_BYTE = 0x55  # any byte but 0 (0 turns it off)


@functools.lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None)


@contextlib.contextmanager
def _filled_allocations() -> Iterator[None]:
    """While encoding, glibc fills every block it hands out from its heap with one byte (mallopt
    M_PERTURB), as it would under MALLOC_PERTURB_.

    Why: libx264 (through libavcodec) reads memory it never wrote, so the same frames gave other
    bytes whenever its buffers came from the heap instead of fresh (zeroed) pages, which depends on
    what the process did before: in ``kebr demo-corpus``, the eSpeak NG calls between clips. Without
    this, 42 of the demo corpus's 65 files differed between two runs; with it, none (2026-12-06). The
    decoded clips were valid either way. Other C libraries: no-op, and the bytes may differ."""
    mallopt = getattr(_libc(), "mallopt", None)
    filling = mallopt is not None and mallopt(_M_PERTURB, _PERTURB_BYTE) == 1
    try:
        yield
    finally:
        if filling:
            mallopt(_M_PERTURB, 0)


def write_clip(
    path: str | Path,
    frames: np.ndarray | None,
    fps: float,
    audio: np.ndarray | None = None,
    sample_rate: int = 16000,
) -> Path:
    """Write an MP4 (H.264 + AAC): RGB uint8 frames (T, H, W, 3) and/or mono float audio.

    Used by the demo corpus and the tests; either stream may be left out to make the
    no-audio and audio-only inputs real data throws at the pipeline.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _filled_allocations(), av.open(str(path), mode="w") as container:
        video_stream = audio_stream = None
        if frames is not None:
            video_stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
            video_stream.height, video_stream.width = frames.shape[1] // 2 * 2, frames.shape[2] // 2 * 2
            video_stream.pix_fmt = "yuv420p"
            # One encoder thread: multithreaded x264 does not give the same bytes twice. The codec
            # context's thread count is what counts: PyAV passes its own to x264, over x264-params.
            video_stream.codec_context.thread_count = 1
            video_stream.options = {"preset": "veryfast", "crf": "23"}
        if audio is not None:
            audio_stream = container.add_stream("aac", rate=sample_rate)
            audio_stream.layout = "mono"
        if video_stream is not None:
            h, w = video_stream.height, video_stream.width
            for image in frames:
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image[:h, :w]), format="rgb24")
                container.mux(video_stream.encode(frame))
            container.mux(video_stream.encode(None))
        if audio_stream is not None:
            samples = np.clip(audio, -1.0, 1.0).astype(np.float32)[None, :]
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate = sample_rate
            container.mux(audio_stream.encode(frame))
            container.mux(audio_stream.encode(None))
    return path
