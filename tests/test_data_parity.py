"""The data-side parity switches (issue 8): the reference's VADER lexicon file and MOSI/MOSEI audio
resampled through 16 kHz, each a config key that the stages read and that their fingerprints follow."""

from __future__ import annotations

from pathlib import Path

import librosa
import numpy as np
import pytest
import resampy
import soundfile

from kebr.clips import Clip
from kebr.config import validate_config
from kebr.fingerprints import features_fingerprint, stage_fingerprint
from kebr.features.audio import REFERENCE_KAISER_BEST, _reference_kaiser_best, librosa33, resample_kaiser_best
from kebr.masking import _package_path, load_tokenizer, load_vader_lexicon
from kebr.media import load_audio, write_clip
from kebr.stages.work import audio_extractor_for, masker_for
from kebr.demo.tts import synthesize

SR = 22050


@pytest.fixture(scope="module")
def reference_lexicon(tmp_path_factory):
    """vaderSentiment's file with the reference's differences (spec section 10): badass -0.6 instead
    of +1.4, and no heart, hearts, flawed."""
    shipped = _package_path("vaderSentiment", "vader_lexicon.txt").read_text(encoding="utf-8").splitlines()
    lines = []
    for line in shipped:
        token = line.split("\t")[0]
        if token in ("heart", "hearts", "flawed"):
            continue
        lines.append("badass\t-0.6\t1.2\t[0, -1, -1, 0, -1, -1, 0, -1, -1, 0]" if token == "badass" else line)
    path = tmp_path_factory.mktemp("lexicon") / "vader_lexicon.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_lexicon_key_picks_the_masked_word_and_label(reference_lexicon):
    tokenizer = load_tokenizer("bundled")
    shipped = masker_for(validate_config({}), tokenizer)
    reference = masker_for(validate_config({"text": {"lexicon": str(reference_lexicon)}}), tokenizer)
    assert shipped("what a badass movie", "c").label == 1.05  # 1.4 x 0.75
    assert reference("what a badass movie", "c").label == -0.45  # -0.6 x 0.75
    text = "the plot was flawed but my heart was in it"
    a, b = shipped(text, "c"), reference(text, "c")
    assert (a.word, a.label) == ("heart", 2.4)
    assert b.no_sentiment_word and b.label == 0.0  # neither word exists in the reference's file
    assert len(load_vader_lexicon(reference_lexicon)) == len(load_vader_lexicon()) - 3


def test_bad_lexicon_file_names_file_and_line(tmp_path):
    bad = tmp_path / "lex.txt"
    bad.write_text("good\t1.9\t0.9\t[2]\nbad line without tabs\n")
    with pytest.raises(ValueError, match=r"lex.txt:2: expected token<TAB>mean"):
        load_vader_lexicon(bad)
    with pytest.raises(FileNotFoundError, match="VADER lexicon not found"):
        masker_for(validate_config({"text": {"lexicon": str(tmp_path / "absent.txt")}}), load_tokenizer("bundled"))


def band_energy(y: np.ndarray, low_hz: float) -> float:
    """Share of the waveform's energy above ``low_hz`` (at 22,050 Hz)."""
    power = np.abs(np.fft.rfft(y)) ** 2
    freqs = np.fft.rfftfreq(len(y), 1 / SR)
    return float(power[freqs > low_hz].sum() / power.sum())


@pytest.fixture(scope="module")
def bright_clip(tmp_path_factory):
    """Speech plus a 10 kHz tone, in an AAC track at 44.1 kHz (a MOSI video's audio rate)."""
    speech, sr = synthesize("I really loved this movie, the acting was wonderful.")
    speech = librosa.resample(speech, orig_sr=sr, target_sr=44100)
    t = np.arange(len(speech)) / 44100
    mixed = 0.6 * speech + 0.1 * np.sin(2 * np.pi * 10000 * t)
    path = write_clip(tmp_path_factory.mktemp("audio") / "clip.mp4", None, 25, audio=mixed, sample_rate=44100)
    return Clip("v/1", video=str(path))


def test_resample_via_16k_is_librosa_load_of_a_16k_wav(bright_clip, tmp_path):
    direct = audio_extractor_for(validate_config({}))
    via = audio_extractor_for(validate_config({"audio": {"resample_via": 16000}}))
    assert via.resampler == "kaiser_best"  # the reference's (librosa 0.9.1 + resampy 0.2.2)
    via_soxr = audio_extractor_for(validate_config({"audio": {"resample_via": 16000, "resampler": "soxr_hq"}}))
    y_direct, y_via = direct.load_waveform(bright_clip), via.load_waveform(bright_clip)
    # Straight at 22,050 Hz the 10 kHz tone is there; through 16 kHz nothing above 8 kHz survives.
    assert band_energy(y_direct, 8100) > 0.02
    assert band_energy(y_via, 8100) < 1e-7
    # The reference: the clip as a 16 kHz 16-bit WAV, read back by librosa.load at 22,050 Hz.
    pcm = np.clip(np.round(load_audio(bright_clip.video, 16000) * 32768), -32768, 32767).astype(np.int16)
    wav = tmp_path / "clip.wav"
    soundfile.write(wav, pcm, 16000, subtype="PCM_16")
    # librosa.load of that WAV: read at 16 kHz (int16 / 32768), then kaiser_best as librosa 0.9.1 did ...
    at_16k, _ = librosa.load(wav, sr=None)
    reference = resample_kaiser_best(at_16k, 16000, SR)
    np.testing.assert_array_equal(y_via, reference)
    # ... or soxr_hq, what librosa.load(sr=22050) does today (librosa >= 0.10).
    np.testing.assert_array_equal(via_soxr.load_waveform(bright_clip), librosa.load(wav, sr=SR)[0])
    features, straight = via.extract(bright_clip), direct.extract(bright_clip)
    np.testing.assert_array_equal(features, librosa33(reference))
    # Decoding straight at 22,050 Hz moves the MFCCs by tens, and the tone's zero crossings dominate
    # the ZCR; through 16 kHz the ZCR is speech's.
    assert np.abs(straight[:, 1:21] - features[:, 1:21]).max() > 10
    assert np.median(straight[:, 0]) > 0.3 and np.median(features[:, 0]) < 0.2


def parity_signal() -> np.ndarray:
    """0.25 s at 16 kHz, 16-bit values: two tones (440 Hz, 7.3 kHz near Nyquist), a chirp from 100 Hz to
    7,850 Hz and a click, so the whole band and the filter's edge are exercised."""
    t = np.arange(4000) / 16000
    x = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 7300 * t + 0.5)
         + 0.15 * np.sin(2 * np.pi * (100 * t + 15500 * t**2)))
    x[500] += 0.3
    return (np.round(x * 32767) / 32768).astype(np.float32)


def test_kaiser_best_is_resampy_022s():
    """tests/data/resampy_0.2.2_kaiser_best.npy holds what the reference's stack computed for
    parity_signal(): resampy 0.2.2 (its sdist, run under this numba) ``resample(x, 16000, 22050,
    filter="kaiser_best")``, fixed to ceil(4000 x 22050 / 16000) = 5513 samples as librosa 0.9.1 does."""
    want = np.load(Path(__file__).parent / "data" / "resampy_0.2.2_kaiser_best.npy")
    x = parity_signal()
    got = resample_kaiser_best(x, 16000, 22050)
    assert (got.shape, got.dtype) == ((5513,), np.float32)
    assert np.abs(got - want).max() < 1e-6  # the issue asks for 1e-4; float32 rounding is all that differs
    # What the switch is for: neither a current resampy's filter of the same name nor soxr comes close.
    current = librosa.util.fix_length(resampy.resample(x, 16000, 22050, filter="kaiser_best"), size=5513)
    assert np.abs(current - want).max() > 0.05
    assert np.abs(librosa.resample(x, orig_sr=16000, target_sr=22050, res_type="soxr_hq") - want).max() > 0.02
    # The table is a windowed sinc: 64 crossings x 2**9 entries + 1, the roll-off at 0, the Kaiser tail at the end.
    half, precision, rolloff = _reference_kaiser_best()
    assert (half.shape, precision, rolloff) == ((64 * 512 + 1,), 512, REFERENCE_KAISER_BEST["rolloff"])
    assert half[0] == pytest.approx(rolloff) and abs(half[-1]) < 1e-7
    # A 1 kHz tone keeps its frequency and amplitude (passband), away from the edges.
    t = np.arange(16000) / 16000
    tone = resample_kaiser_best((0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32), 16000, 22050)
    exact = 0.5 * np.sin(2 * np.pi * 1000 * np.arange(22050) / 22050)
    assert np.abs(tone - exact)[500:-500].max() < 1e-4


def test_stage_fingerprints_follow_the_new_keys():
    base = validate_config({"datasets": {
        "mosi": {"layout": "mmsa_raw", "root": "/data/MOSI"},
        "mosi_pkl": {"layout": "mmsa_pickle", "pickle": "/data/MOSI/aligned_50.pkl", "trust_pickle": True}}})

    def edited(section: str, key: str, value: object) -> dict:
        config = validate_config({**base, section: {**base[section], key: value}})
        return config

    lexicon = edited("text", "lexicon", "/ref/vader_lexicon.txt")
    assert stage_fingerprint(lexicon, "assemble") != stage_fingerprint(base, "assemble")
    assert stage_fingerprint(lexicon, "audio") == stage_fingerprint(base, "audio")
    via = edited("audio", "resample_via", 16000)
    assert stage_fingerprint(via, "audio") != stage_fingerprint(base, "audio")
    soxr_via = validate_config({**via, "audio": {**via["audio"], "resampler": "soxr_hq"}})
    assert stage_fingerprint(soxr_via, "audio") != stage_fingerprint(via, "audio")
    assert stage_fingerprint(via, "assemble") == stage_fingerprint(base, "assemble")
    # An imported dataset's shards do not depend on the audio extractor's settings; its pickle does.
    assert features_fingerprint(via, "mosi") != features_fingerprint(base, "mosi")
    assert features_fingerprint(via, "mosi_pkl") == features_fingerprint(base, "mosi_pkl")
    moved = validate_config({**base, "datasets": {**base["datasets"], "mosi_pkl": {
        **base["datasets"]["mosi_pkl"], "pickle": "/data/MOSI/unaligned_50.pkl"}}})
    assert stage_fingerprint(moved, "plan", "mosi_pkl") != stage_fingerprint(base, "plan", "mosi_pkl")
