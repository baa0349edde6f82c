"""Per-frame audio features: the reference's 33 librosa features and/or openSMILE eGeMAPS LLDs.

Feature sets (config ``audio.feature_sets``; one, or several concatenated in the order given):

- ``librosa33`` - parity with the reference (spec section 9): zero-crossing rate (frame 2048),
  20 MFCCs (HTK mel) and 12 chroma_cqt bins, all at ``hop_length`` (512) on 22,050 Hz mono, in
  that order: ``zcr, mfcc_00..mfcc_19, chroma_C..chroma_B``. Frame t is centred at
  ``t * hop_length / sample_rate`` seconds (librosa's ``center=True``).
- ``egemaps`` - openSMILE eGeMAPSv02 low-level descriptors (25 columns, openSMILE's own names),
  one frame per 10 ms (openSMILE rounds the hop to whole samples: 221 samples at 22,050 Hz).
  openSMILE reports each frame as [start, start + 20 ms]; its time here is the centre, start + 10 ms.

When several sets are concatenated, the FIRST set's frames are the time base: each other set is
linearly interpolated, column by column, at the first set's frame-centre times (held at its edge
values outside its own time range). So ``["librosa33", "egemaps"]`` gives 23.2 ms rows of 58
columns, and ``["egemaps", "librosa33"]`` gives 10 ms rows.

``resample_via`` (config ``audio.resample_via``, default off) reproduces how the reference got its
MOSI/MOSEI audio: ``librosa.load`` of the corpora's released 16 kHz WAVs at 22,050 Hz. The clip is
decoded at that rate (FFmpeg's resampler, through PyAV), rounded to 16-bit PCM as a WAV stores it,
then resampled to ``sample_rate`` by ``audio.resampler``. The reference pinned librosa 0.9.1 and
resampy 0.2.2 (its requirements.txt), whose ``librosa.load`` resamples with resampy's ``kaiser_best``:
that is the default, ``kaiser_best`` (``resample_kaiser_best``). ``soxr_hq`` is what ``librosa.load``
does since librosa 0.10. With 16000 nothing above 8 kHz survives, as in the reference; decoding
straight at 22,050 Hz keeps content up to 11 kHz, which moves the MFCCs and the ZCR.

Every set is computed on the whole waveform and only then truncated to ``max_frames``: chroma_cqt
estimates the tuning from the whole signal, so cropping the waveform first would change the values
the reference computes. ``max_frames`` counts rows of the first set (400 eGeMAPS rows are 4 s).
Padding to ``max_frames`` is the shard writer's job; rows returned here are all real frames.

librosa's first call compiles its numba kernels (seconds to tens of seconds). Call
``AudioFeatureExtractor.warm()`` once per worker process before the first clip. It compiles under
an inter-process lock: numba caches librosa's kernels on disk, and two processes that compile and
cache the same ``@guvectorize`` kernels at once can leave a cache that segfaults every later process
(numba issue #10128). That is exactly what a parallel Snakemake run on a fresh install does. The lock
file sits in the directory numba caches librosa's kernels in (``NUMBA_CACHE_DIR``, else librosa's
own ``__pycache__`` when writable, else ``~/.cache/numba``), so processes on other nodes that share
that directory over NFS wait for it too. The lock is not enough: numba tags each cached kernel with a
counter of the functions its process compiled before it (fixed by numba PR #10545, unreleased), so
two processes that compile different kernels first, one after the other, can still leave a cache
whose gufunc wrappers point at the wrong kernels (seen here: a test process computed features
in-process, then every audio worker segfaulted in ``piptrack``). So scripts/setup.sh clears librosa's
cache and fills it in one process (``compile_kernels``): every kernel the stage runs, real clips
included, is then read from the cache and never written again.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import librosa
import numpy as np
import opensmile
import resampy
import scipy.signal

from kebr.clips import Clip, ClipError, SkipKind
from kebr.media import load_audio

FEATURE_SETS = ("librosa33", "egemaps")

CHROMA_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
LIBROSA33_COLUMNS = ["zcr", *(f"mfcc_{i:02d}" for i in range(20)), *(f"chroma_{n}" for n in CHROMA_NAMES)]

# The frame length openSMILE reports for eGeMAPSv02 LLDs (its 20 ms analysis frames, 10 ms apart).
EGEMAPS_FRAME_S = 0.020

# Peak amplitude below which a waveform is digital silence (-80 dBFS, about 3 LSB of 16-bit PCM).
# Such a clip has no signal to describe, so it is skipped rather than written as a row of
# silence features. Real room silence or music sits far above this and is kept.
SILENCE_PEAK = 1e-4

log = logging.getLogger("kebr")

RESAMPLERS = ("kaiser_best", "soxr_hq")

# resampy 0.2.2's `kaiser_best` (resampy/data/kaiser_best.npz): a windowed sinc with 64 zero crossings,
# 2**9 table entries per crossing, a Kaiser window of beta 14.769656459379492 and a roll-off at
# 0.9475937167399596 x Nyquist (resampy 0.2.2 filters.py). resampy 0.3 replaced the filter under the same
# name (roll-off 0.917, 2**13 entries): on speech-like noise its output differs from 0.2.2's by up to 0.1,
# so naming "kaiser_best" to a current resampy would not give the reference's samples. Rebuilt from these
# parameters, the table equals 0.2.2's file to 2e-16, and resampy's interpolation with it equals 0.2.2's
# output within 3e-7 (tests/test_data_parity.py checks against samples resampy 0.2.2 wrote).
REFERENCE_KAISER_BEST = {"num_zeros": 64, "precision": 9, "beta": 14.769656459379492,
                         "rolloff": 0.9475937167399596}


@functools.cache
def _reference_kaiser_best() -> tuple[np.ndarray, int, float]:
    """(half window, table entries per zero crossing, roll-off), as resampy's filter functions return."""
    p = REFERENCE_KAISER_BEST
    return resampy.filters.sinc_window(
        num_zeros=p["num_zeros"], precision=p["precision"], rolloff=p["rolloff"],
        window=lambda n: scipy.signal.get_window(("kaiser", p["beta"]), n, fftbins=False))


def compile_kernels() -> None:
    """Compile and cache, in this one process and in a fixed order, every numba kernel the audio stage
    runs (librosa33 straight at 22,050 Hz and through 16 kHz with kaiser_best), so that no later
    process writes to the cache (the module docstring says why). scripts/setup.sh calls it."""
    for resample_via, resampler in ((None, "soxr_hq"), (16000, "kaiser_best")):
        AudioFeatureExtractor(resample_via=resample_via, resampler=resampler).warm()


def resample_kaiser_best(y: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """``librosa.resample(y, orig_sr=..., target_sr=..., res_type="kaiser_best")`` as librosa 0.9.1 with
    resampy 0.2.2 computed it: resampy's band-limited interpolation with 0.2.2's filter, then
    librosa's fix_length to ceil(len(y) x ratio) samples, in y's dtype."""
    y_hat = resampy.resample(y, orig_sr, target_sr, filter=_reference_kaiser_best)
    size = int(np.ceil(y.shape[-1] * float(target_sr) / orig_sr))
    return np.asarray(librosa.util.fix_length(y_hat, size=size), dtype=y.dtype)


def _numba_cache_dir() -> Path:
    """Where numba caches librosa's kernels (numba's own order of choice, spelt out)."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return Path(os.environ["NUMBA_CACHE_DIR"])
    in_tree = Path(librosa.__file__).parent / "__pycache__"
    if os.access(in_tree, os.W_OK):
        return in_tree
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "numba"


@contextlib.contextmanager
def numba_compile_lock() -> Iterator[None]:
    """Hold an exclusive lock while librosa's numba kernels compile (see the module docstring)."""
    path = _numba_cache_dir() / "kebr-compile.lock"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = path.open("a")
    except OSError as exc:
        log.warning("no numba compile lock at %s (%s); compiling unlocked", path, exc)
        yield
        return
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError as exc:  # e.g. a network file system without lock support
            log.warning("cannot lock %s (%s); compiling unlocked", path, exc)
        yield


# chroma_cqt builds its constant-Q filter bank (a wavelet per bin, its FFT, sparsified) for every
# clip: two thirds of the audio stage's CPU time on speech clips (cProfile, bench/voxceleb2.py
# --measure). The bank depends on the clip only through its estimated tuning, which librosa rounds to
# 0.01 of a bin, so a corpus needs at most ~100 banks per octave. librosa caches the builder
# (``@cache(level=10)``) only to disk through joblib and only when LIBROSA_CACHE_DIR is set: 92 MB of
# pickles for 48 clips, slower than building cold. So the builder is memoised in memory, per process,
# here: same inputs, same arrays (copies: ``vqt`` scales its basis in place), so the features are
# bit-identical (tests/test_audio_features.py). Where librosa changes the private builder's name or
# signature the memo is not installed and librosa runs as released.
_CQT_FILTER_BUILDER = "__vqt_filter_fft"
_CQT_FILTERS_MAX = 4096  # entries (7.5 kB each, sparse), a bound that a corpus never reaches


def _memoised(build: Any) -> Any:
    banks: dict[tuple, tuple] = {}

    def memoised_build(sr: float, freqs: np.ndarray, filter_scale: float, norm: Any, sparsity: float,
                       hop_length: int | None = None, window: Any = "hann", gamma: float = 0.0,
                       dtype: Any = np.complex64, alpha: np.ndarray | None = None) -> tuple:
        args = (sr, freqs, filter_scale, norm, sparsity, hop_length, window, gamma, dtype, alpha)
        try:
            key = (float(sr), np.asarray(freqs).tobytes(), filter_scale, norm, sparsity, hop_length, window,
                   float(gamma), np.dtype(dtype).str, None if alpha is None else np.asarray(alpha).tobytes())
            hash(key)
        except TypeError:  # an unhashable window: build as librosa would
            return build(*args)
        if key not in banks:
            if len(banks) >= _CQT_FILTERS_MAX:
                banks.clear()
            banks[key] = build(*args)
        basis, n_fft, lengths = banks[key]
        return basis.copy(), n_fft, lengths.copy()

    memoised_build.kebr_memoised = True  # type: ignore[attr-defined]
    memoised_build.banks = banks  # type: ignore[attr-defined]
    memoised_build.__wrapped__ = build  # type: ignore[attr-defined]
    return memoised_build


@functools.cache
def memoise_cqt_filters() -> bool:
    """Install the in-memory memo of librosa's constant-Q filter builder (once per process); False
    where this librosa has no such builder (then nothing changes)."""
    import inspect

    import librosa.core.constantq as constantq

    build = constantq.__dict__.get(_CQT_FILTER_BUILDER)
    if build is None or getattr(build, "kebr_memoised", False):
        return build is not None
    expected = ["sr", "freqs", "filter_scale", "norm", "sparsity", "hop_length", "window", "gamma", "dtype",
                "alpha"]
    if list(inspect.signature(build).parameters) != expected:
        log.warning("librosa %s: %s has another signature; chroma_cqt runs unmemoised", librosa.__version__,
                    _CQT_FILTER_BUILDER)
        return False
    setattr(constantq, _CQT_FILTER_BUILDER, _memoised(build))
    return True


def librosa33(waveform: np.ndarray, sample_rate: int = 22050, hop_length: int = 512) -> np.ndarray:
    """The reference's 33 features per frame, (T, 33) float32: zcr, 20 MFCC, 12 chroma."""
    y = np.asarray(waveform, dtype=np.float32)
    memoise_cqt_filters()
    with warnings.catch_warnings():
        # Short clips (and chroma_cqt's downsampled octaves of every clip) are shorter than the
        # FFT; librosa zero-pads them as intended and warns each time, which would flood the logs.
        warnings.filterwarnings("ignore", message=r"n_fft=\d+ is too large", category=UserWarning)
        zcr = librosa.feature.zero_crossing_rate(y, frame_length=2048, hop_length=hop_length)
        mfcc = librosa.feature.mfcc(y=y, sr=sample_rate, n_mfcc=20, htk=True, hop_length=hop_length)
        chroma = librosa.feature.chroma_cqt(y=y, sr=sample_rate, hop_length=hop_length)
    # All three are centred frames, 1 + len(y) // hop of them in librosa 0.11, but chroma_cqt trims
    # its per-octave stacks to the shortest octave, so its count is not guaranteed to match the
    # STFT-based two: cut all three to the shortest, which drops at most the last partial frame.
    frames = min(zcr.shape[1], mfcc.shape[1], chroma.shape[1])
    return np.concatenate([zcr[:, :frames], mfcc[:, :frames], chroma[:, :frames]]).T.astype(np.float32)


class AudioFeatureExtractor:
    """Turns one clip's audio into a (T, d) float32 matrix of the configured feature sets."""

    def __init__(
        self,
        feature_sets: Sequence[str] = ("librosa33",),
        sample_rate: int = 22050,
        hop_length: int = 512,
        max_frames: int = 400,
        resample_via: int | None = None,
        resampler: str = "kaiser_best",
    ) -> None:
        unknown = [name for name in feature_sets if name not in FEATURE_SETS]
        if not feature_sets or unknown or len(set(feature_sets)) != len(feature_sets):
            raise ValueError(
                f"audio.feature_sets must be distinct names from {FEATURE_SETS}, got {list(feature_sets)}"
            )
        self.feature_sets = list(feature_sets)
        self.sample_rate = sample_rate
        self.hop_length = hop_length
        self.max_frames = max_frames
        if resampler not in RESAMPLERS:
            raise ValueError(f"audio.resampler must be one of {RESAMPLERS}, got {resampler!r}")
        self.resample_via = resample_via
        self.resampler = resampler
        # Building the openSMILE pipeline parses its config; do it once per extractor, not per clip.
        self._smile = (
            opensmile.Smile(
                feature_set=opensmile.FeatureSet.eGeMAPSv02,
                feature_level=opensmile.FeatureLevel.LowLevelDescriptors,
            )
            if "egemaps" in self.feature_sets
            else None
        )
        self.columns: list[str] = []
        for name in self.feature_sets:
            self.columns += LIBROSA33_COLUMNS if name == "librosa33" else list(self._smile.feature_names)

    def warm(self) -> None:
        """Run every configured set once on a synthetic second of audio, so numba compiles (or loads
        its cache) now, one process at a time."""
        t = np.arange(self.sample_rate, dtype=np.float32) / self.sample_rate
        tone = 0.3 * np.sin(2 * np.pi * 220.0 * t) + 0.1 * np.sin(2 * np.pi * 440.0 * t)
        with numba_compile_lock():
            # librosa imports its submodules lazily, and some compile their kernels on import.
            import librosa.core  # noqa: F401
            import librosa.feature  # noqa: F401
            import librosa.util  # noqa: F401

            if self.resample_via is not None:  # resampy's kernels compile on their first call too
                self.resample(tone[: self.resample_via].astype(np.float32))
            self.from_waveform(tone.astype(np.float32))

    def extract(self, clip: Clip, max_seconds: float | None = None) -> np.ndarray:
        """Decode the clip's audio once, at ``sample_rate`` mono (never past ``max_seconds``), and
        compute its features."""
        return self.from_waveform(self.load_waveform(clip, max_seconds))

    def load_waveform(self, clip: Clip, max_seconds: float | None = None) -> np.ndarray:
        """The clip's audio at ``sample_rate`` mono float32, through ``resample_via`` when set."""
        if self.resample_via is None:
            return load_audio(clip.media, self.sample_rate, max_seconds)
        y = load_audio(clip.media, self.resample_via, max_seconds)
        # A 16-bit WAV holds round(x * 32768) clipped to int16; librosa.load reads it back / 32768.
        pcm16 = np.clip(np.round(y * 32768.0), -32768, 32767) / 32768.0
        return self.resample(pcm16.astype(np.float32))

    def resample(self, y: np.ndarray) -> np.ndarray:
        """Samples at ``resample_via`` -> ``sample_rate`` with the configured ``resampler``."""
        if self.resample_via is None:
            raise ValueError("resample() needs resample_via")
        if self.resampler == "kaiser_best":
            return resample_kaiser_best(y, self.resample_via, self.sample_rate)
        return librosa.resample(y, orig_sr=self.resample_via, target_sr=self.sample_rate, res_type="soxr_hq")

    def from_waveform(self, waveform: np.ndarray) -> np.ndarray:
        """Mono float32 samples at ``sample_rate`` -> (T, d) float32, T <= ``max_frames``."""
        y = np.asarray(waveform, dtype=np.float32)
        if y.ndim != 1:
            raise ValueError(f"audio: expected a mono 1-D waveform, got shape {y.shape}")
        if y.size == 0:
            raise ClipError("audio: no samples", kind=SkipKind.UNREADABLE)
        peak = float(np.max(np.abs(y)))
        if not np.isfinite(peak):
            raise ClipError("audio: waveform contains NaN or infinite samples", kind=SkipKind.UNREADABLE)
        if peak < SILENCE_PEAK:
            raise ClipError(f"audio: silent (peak amplitude {peak:.1e}, below -80 dBFS)", kind=SkipKind.SILENCE)

        base_times, base = self._compute(self.feature_sets[0], y)
        base_times, blocks = base_times[: self.max_frames], [base[: self.max_frames]]
        for name in self.feature_sets[1:]:
            times, values = self._compute(name, y)
            blocks.append(
                np.stack([np.interp(base_times, times, column) for column in values.T], axis=1).astype(np.float32)
            )
        return np.concatenate(blocks, axis=1)

    def _compute(self, name: str, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One feature set on the whole waveform: (frame-centre times in s (T,), values (T, d))."""
        if name == "librosa33":
            values = librosa33(y, self.sample_rate, self.hop_length)
            return np.arange(len(values)) * self.hop_length / self.sample_rate, values
        with warnings.catch_warnings():
            # Raised for clips shorter than the pitch window; the NaN check below turns it into a skip.
            warnings.filterwarnings("ignore", message="Segment too short", category=UserWarning)
            frame = self._smile.process_signal(y, self.sample_rate)
        if frame.isna().to_numpy().any():
            raise ClipError(f"audio: {y.size / self.sample_rate * 1000:.0f} ms is too short for eGeMAPS LLDs",
                            kind=SkipKind.TOO_SHORT)
        # Not (start + end) / 2: the opensmile wrapper stretches the last frame's end to the end of
        # the signal, which would move that frame's centre by up to tens of milliseconds.
        start = frame.index.get_level_values("start").total_seconds().to_numpy()
        return start + EGEMAPS_FRAME_S / 2, frame.to_numpy(dtype=np.float32)
