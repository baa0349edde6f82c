"""Text to speech with eSpeak NG (kebr/demo/tts.py): a sentence is spoken, voices, rate and pitch change
the speech, every listed voice exists and an unknown one is an error."""

from __future__ import annotations

import numpy as np
import pytest

from kebr.demo.tts import ENGLISH_VOICES, synthesize

SENTENCE = "The acting was brilliant and the script is excellent."


def _f0(audio: np.ndarray, sample_rate: int) -> float:
    """Median autocorrelation pitch (Hz, 60-400) over the louder half of 40 ms frames."""
    n = int(0.04 * sample_rate)
    frames = audio[: len(audio) // n * n].reshape(-1, n)
    energy = (frames**2).mean(axis=1)
    pitches = []
    for frame in frames[energy >= np.median(energy)]:
        ac = np.correlate(frame, frame, mode="full")[n - 1:]
        lo, hi = sample_rate // 400, sample_rate // 60
        pitches.append(sample_rate / (lo + int(np.argmax(ac[lo:hi]))))
    return float(np.median(pitches))


def test_synthesize_speaks_a_sentence() -> None:
    audio, sample_rate = synthesize(SENTENCE)
    assert sample_rate == 22050
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert 1.5 < len(audio) / sample_rate < 6.0
    assert np.abs(audio).max() <= 1.0
    assert np.sqrt(np.mean(audio**2)) > 0.03
    # Speech has pauses: the quietest 40 ms frames are far below the loudest.
    energy = (audio[: len(audio) // 882 * 882].reshape(-1, 882) ** 2).mean(axis=1)
    assert energy.min() < 0.01 * energy.max()


def test_voices_rate_and_pitch_change_the_speech() -> None:
    base, sr = synthesize(SENTENCE, "en-us")
    for voice in ("en-gb-x-rp", "en-us+f3"):
        other, _ = synthesize(SENTENCE, voice)
        n = min(len(base), len(other))
        assert len(other) != len(base) or not np.allclose(other[:n], base[:n])
    slow, _ = synthesize(SENTENCE, rate=120)
    fast, _ = synthesize(SENTENCE, rate=240)
    assert len(slow) > 1.5 * len(fast)
    low, _ = synthesize(SENTENCE, pitch=10)
    high, _ = synthesize(SENTENCE, pitch=90)
    assert _f0(high, sr) > 1.3 * _f0(low, sr)


def test_every_listed_voice_exists_and_unknown_voice_is_an_error() -> None:
    for voice in ENGLISH_VOICES:
        audio, _ = synthesize("Hello there.", voice)
        assert np.sqrt(np.mean(audio**2)) > 0.02, voice
    with pytest.raises(ValueError, match="unknown eSpeak voice"):
        synthesize("Hello there.", "no-such-voice")
