"""Decode and write media through FFmpeg's libraries (PyAV).

Every reader turns an unreadable input into a ``ClipError`` with a reason that names what was wrong
(missing file, zero bytes, no audio stream, no decodable frame) and its kind, so the calling stage
records a skip instead of crashing its shard. An I/O error of the storage itself (EIO, ESTALE: see
``kebr.clips.is_transient``) is NOT turned into a skip: it propagates so the stage retries. Audio is
never decoded past ``max_seconds`` (config ``stages.max_clip_seconds``), whatever the container says.
Video can also be a folder of frame images (VoxCeleb1's face tracks).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from kebr.clips import ClipError, is_transient

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def _open(path: str | Path) -> av.container.InputContainer:
    p = Path(path)
    if not p.exists():
        raise ClipError(f"media: file not found: {p}", kind="not_found")
    if not p.is_file():  # a FIFO would block the decoder forever, a device would stream forever
        raise ClipError(f"media: not a regular file: {p}", kind="unreadable")
    if p.stat().st_size == 0:
        raise ClipError(f"media: zero-byte file: {p}", kind="zero_byte")
    try:
        return av.open(str(p))
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        if is_transient(exc):  # EIO, ESTALE...: the storage, not the file; the stage retries
            raise
        raise ClipError(f"media: not a readable media file ({type(exc).__name__}: {exc})",
                        kind="unreadable") from exc


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
        return ClipError(f"media: {duration_s:.0f} s is longer than max_clip_seconds={max_seconds:g}", kind="too_long")
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
            raise ClipError("media: no audio stream", kind="no_audio_stream")
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
                                    f"says {said}); decoding stopped there", kind="too_long")
        except av.error.FFmpegError as exc:
            if is_transient(exc):
                raise
            # A truncated file decodes up to the damage; keep what was decoded if anything was.
            if not chunks:
                raise ClipError(f"media: audio decode failed ({exc})", kind="unreadable") from exc
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray()[0])
    if not chunks:
        raise ClipError("media: audio stream has no samples", kind="unreadable")
    return np.concatenate(chunks).astype(np.float32, copy=False)


def read_frames(path: str | Path, fps: float, max_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Frames sampled at ``fps`` (the latest decoded frame at each sample time), at most ``max_frames``.

    Returns (timestamps in seconds (T,), RGB uint8 frames (T, H, W, 3)). Sampling by presentation
    time, not by frame index, makes variable-frame-rate and odd-rate video (24000/1001, 120 fps)
    come out on the same time grid as constant-rate video.
    """
    p = Path(path)
    if p.is_dir():
        return _read_frame_folder(p, max_frames)
    step = 1.0 / fps
    times: list[float] = []
    frames: list[np.ndarray] = []
    with _open(p) as container:
        if not container.streams.video:
            raise ClipError("media: no video stream", kind="no_video_stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        next_time = 0.0
        try:
            for frame in container.decode(stream):
                if frame.time is None:
                    continue
                if frame.time + 1e-6 < next_time:
                    continue
                image = frame.to_ndarray(format="rgb24")
                # A frame may cover several sample times when the source rate is below `fps`.
                while frame.time + 1e-6 >= next_time and len(frames) < max_frames:
                    times.append(next_time)
                    frames.append(image)
                    next_time += step
                if len(frames) >= max_frames:
                    break
        except av.error.FFmpegError as exc:
            if is_transient(exc):
                raise
            if not frames:
                raise ClipError(f"media: video decode failed ({exc})", kind="unreadable") from exc
    if not frames:
        raise ClipError("media: no decodable video frame", kind="unreadable")
    return np.asarray(times, dtype=np.float64), np.stack(frames)


def _read_frame_folder(folder: Path, max_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """A folder of face-track images (VoxCeleb1 ``unzippedIntervalFaces``), in name order."""
    files = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)[:max_frames]
    if not files:
        raise ClipError(f"media: no images in frame folder {folder}", kind="unreadable")
    frames = []
    for f in files:
        with _open(f) as container:
            frame = next(container.decode(video=0), None)
            if frame is None:
                raise ClipError(f"media: unreadable image {f.name}", kind="unreadable")
            frames.append(frame.to_ndarray(format="rgb24"))
    heights = {im.shape[:2] for im in frames}
    if len(heights) > 1:
        raise ClipError(f"media: frame folder {folder} mixes image sizes {sorted(heights)}",
                        kind="unreadable")
    # Frame folders carry no timing; their index is their time step.
    return np.arange(len(frames), dtype=np.float64), np.stack(frames)


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
    with av.open(str(path), mode="w") as container:
        video_stream = audio_stream = None
        if frames is not None:
            video_stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
            video_stream.height, video_stream.width = frames.shape[1] // 2 * 2, frames.shape[2] // 2 * 2
            video_stream.pix_fmt = "yuv420p"
            # one encoder thread: multithreaded x264 does not give the same bytes twice
            video_stream.options = {"preset": "veryfast", "crf": "23", "x264-params": "threads=1"}
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
