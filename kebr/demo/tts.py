"""Text to speech with eSpeak NG, for the demo corpus and the tests.

The PyPI package ``espeakng-loader`` ships ``libespeak-ng.so`` and its voice data, so no system
package is needed; we call the C API (``speak_lib.h``) through ctypes. eSpeak NG keeps global
state (one current voice, one callback), so the library is initialised once per process and every
synthesis runs under one lock.
"""

from __future__ import annotations

import ctypes
import threading

import espeakng_loader
import numpy as np

# English voices present in the shipped data: language files (espeak-ng-data/lang/gmw/en*) and
# "+variant" voices (espeak-ng-data/voices/!v/*). en-gb-scotland is left out: Whisper (the default
# ASR) misheard it most, about half the words at 190 words per minute.
ENGLISH_VOICES: tuple[str, ...] = (
    "en-us",
    "en",
    "en-gb-x-rp",
    "en-us+f3",
    "en+m3",
    "en-us+f2",
    "en+m7",
)

# Constants from speak_lib.h.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000  # return an error instead of calling exit() when the data is missing
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAM_RATE = 1  # words per minute, 80-450
_PARAM_PITCH = 3  # 0-100, 50 is the voice's normal pitch
_EE_OK = 0

# int callback(short *wav, int numsamples, espeak_EVENT *events); return 0 to continue.
_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_sample_rate = 0
_chunks: list[np.ndarray] = []


@_SynthCallback
def _collect(wav, numsamples, events):  # type: ignore[no-untyped-def]
    # eSpeak calls this from inside espeak_Synth (synchronous mode) with each block of samples;
    # wav is NULL once synthesis is complete.
    if wav and numsamples > 0:
        _chunks.append(np.ctypeslib.as_array(wav, shape=(numsamples,)).copy())
    return 0


def _library() -> tuple[ctypes.CDLL, int]:
    """Load and initialise libespeak-ng on first use (caller holds ``_lock``)."""
    global _lib, _sample_rate
    if _lib is None:
        try:
            lib = ctypes.CDLL(espeakng_loader.get_library_path())
            data_path = espeakng_loader.get_data_path()
        except (OSError, RuntimeError) as exc:
            raise RuntimeError(f"tts: cannot load eSpeak NG from espeakng-loader: {exc}") from exc
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
            ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]
        lib.espeak_Synchronize.argtypes = []
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        lib.espeak_ng_SetRandSeed.restype = None
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path.encode(), _INITIALIZE_DONT_EXIT)
        if rate <= 0:
            raise RuntimeError(f"tts: espeak_Initialize failed (returned {rate}) with data at {data_path}")
        lib.espeak_SetSynthCallback(_collect)
        _lib, _sample_rate = lib, rate
    return _lib, _sample_rate


def synthesize(text: str, voice: str = "en-us", rate: int = 160, pitch: int = 50) -> tuple[np.ndarray, int]:
    """Speak ``text``; returns (mono float32 samples in [-1, 1], eSpeak's native sample rate).

    ``voice`` is an eSpeak voice name, optionally with a variant ("en-us+f3"); ``rate`` is in words
    per minute (80-450) and ``pitch`` in 0-100. The same calls in the same order give the same
    samples in every process, but one call's samples depend slightly on the calls before it: eSpeak
    keeps its pitch-flutter phase and gain control in statics that no API call resets.
    """
    if not text.strip():
        raise ValueError("tts: empty text")
    with _lock:
        lib, sample_rate = _library()
        if lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
            raise ValueError(f"tts: unknown eSpeak voice {voice!r}")
        lib.espeak_SetParameter(_PARAM_RATE, int(rate), 0)
        lib.espeak_SetParameter(_PARAM_PITCH, int(pitch), 0)
        # The breathy variants (+f2, +f3, +m7, ...) mix in noise from a generator eSpeak seeds with
        # the clock; a fixed seed makes the audio reproducible.
        lib.espeak_ng_SetRandSeed(0)
        _chunks.clear()
        data = text.encode("utf-8") + b"\0"
        status = lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        lib.espeak_Synchronize()
        if status != _EE_OK:
            raise RuntimeError(f"tts: espeak_Synth failed with status {status}")
        samples = np.concatenate(_chunks) if _chunks else np.zeros(0, dtype=np.int16)
        _chunks.clear()
    if samples.size == 0:
        raise RuntimeError(f"tts: eSpeak produced no audio for {text[:40]!r}")
    return samples.astype(np.float32) / 32768.0, sample_rate
