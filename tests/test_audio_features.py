"""Audio features on real speech (eSpeak NG) and tones, decoded from files the tests write."""

from __future__ import annotations

import os
import subprocess
import sys

import librosa
import numpy as np
import opensmile
import pytest
import soundfile

import kebr.features.audio as audio
from kebr.clips import Clip, ClipError
from kebr.features.audio import LIBROSA33_COLUMNS, AudioFeatureExtractor, librosa33
from kebr.media import load_audio, write_clip
from kebr.demo.tts import synthesize

SR = 22050
CHROMA_A = 9  # C, C#, D, D#, E, F, F#, G, G#, A


def tone(freq: float, seconds: float, sr: int = SR) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def direct_librosa33(y: np.ndarray, sr: int = SR) -> np.ndarray:
    """The reference's three calls, written out independently of kebr."""
    zcr = librosa.feature.zero_crossing_rate(y, frame_length=2048, hop_length=512)
    mfcc = librosa.feature.mfcc(y=y, sr=sr, n_mfcc=20, htk=True, hop_length=512)
    chroma = librosa.feature.chroma_cqt(y=y, sr=sr, hop_length=512)
    return np.concatenate([zcr, mfcc, chroma]).T


def direct_egemaps(y: np.ndarray, sr: int = SR) -> tuple[np.ndarray, np.ndarray, list[str]]:
    smile = opensmile.Smile(
        feature_set=opensmile.FeatureSet.eGeMAPSv02, feature_level=opensmile.FeatureLevel.LowLevelDescriptors
    )
    df = smile.process_signal(y, sr)
    start = df.index.get_level_values("start").total_seconds().to_numpy()
    end = df.index.get_level_values("end").total_seconds().to_numpy()
    assert np.allclose((end - start)[:-1], 0.020)  # 20 ms frames; the wrapper stretches the last one
    return start + 0.010, df.to_numpy(), list(df.columns)


@pytest.fixture(scope="module")
def both() -> AudioFeatureExtractor:
    """librosa33 + egemaps, warmed once for the module (numba compiles here)."""
    extractor = AudioFeatureExtractor(["librosa33", "egemaps"])
    extractor.warm()
    return extractor


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    samples, sr = synthesize("I really loved this movie, the acting was wonderful and the story moved me.")
    assert sr == SR  # eSpeak NG speaks at 22,050 Hz, so the wav below needs no resampling
    return samples


@pytest.fixture(scope="module")
def speech_wav(tmp_path_factory, speech) -> str:
    path = tmp_path_factory.mktemp("audio") / "speech 1 ü.wav"
    soundfile.write(path, speech, SR, subtype="PCM_16")
    return str(path)


def test_columns():
    assert LIBROSA33_COLUMNS[:3] == ["zcr", "mfcc_00", "mfcc_01"]
    assert LIBROSA33_COLUMNS[20:23] == ["mfcc_19", "chroma_C", "chroma_C#"]
    assert LIBROSA33_COLUMNS[-1] == "chroma_B" and len(LIBROSA33_COLUMNS) == 33
    assert AudioFeatureExtractor().columns == LIBROSA33_COLUMNS
    with pytest.raises(ValueError):
        AudioFeatureExtractor(["librosa33", "compare"])
    with pytest.raises(ValueError):
        AudioFeatureExtractor(["librosa33", "librosa33"])


def test_librosa33_equals_reference_on_a_wav(both, speech_wav, monkeypatch):
    """extract() on a file == the reference's librosa.load + three calls, within 1e-4."""
    reference_input, _ = librosa.load(speech_wav, sr=SR)
    expected = direct_librosa33(reference_input)

    calls = []
    monkeypatch.setattr(audio, "load_audio", lambda path, sr, max_seconds=None: calls.append(path) or load_audio(path, sr))
    features = both.extract(Clip("spk__yt__00001", audio=speech_wav))
    assert calls == [speech_wav]  # decoded once for both feature sets

    assert features.dtype == np.float32
    assert features.shape == (1 + reference_input.size // 512, 33 + 25)
    assert np.abs(features[:, :33] - expected).max() < 1e-4
    # Speech, not noise: the MFCCs vary over time and the zcr stays in the speech range.
    assert features[:, 1].std() > 10
    assert 0.01 < np.median(features[:, 0]) < 0.3


def test_mp4_audio_track_decodes_to_the_same_features(both, speech, tmp_path):
    """A video's AAC track at 16 kHz (VoxCeleb2-like) goes through the same path as a waveform."""
    at_16k = librosa.resample(speech, orig_sr=SR, target_sr=16000)
    frames = np.full((5, 32, 32, 3), 128, dtype=np.uint8)
    path = write_clip(tmp_path / "clip.mp4", frames, fps=2, audio=at_16k, sample_rate=16000)
    features = both.extract(Clip("c", video=str(path)))
    expected = direct_librosa33(load_audio(path, SR))
    np.testing.assert_allclose(features[:, :33], expected, atol=1e-4)
    # Same words, so nearly the same length as the 22,050 Hz original (AAC adds priming samples).
    assert abs(len(features) - (1 + speech.size // 512)) <= 3


def test_truncation_at_max_frames(speech):
    long = np.concatenate([speech] * 4)  # ~14 s, more than 400 frames
    assert 1 + long.size // 512 > 400
    full = librosa33(long)
    features = AudioFeatureExtractor().from_waveform(long)
    assert features.shape == (400, 33)
    # Truncated after computing on the whole clip, so the rows are exactly the reference's first 400.
    np.testing.assert_array_equal(features, full[:400])
    assert AudioFeatureExtractor(max_frames=7).from_waveform(long).shape == (7, 33)


def test_memoised_cqt_filter_banks_give_bit_identical_features(speech, monkeypatch):
    """chroma_cqt's filter banks come from an in-memory memo keyed by the clip's tuning; every value
    equals librosa's own build, on the first clip of a tuning and on the later ones served from the memo."""
    import librosa.core.constantq as constantq

    assert audio.memoise_cqt_filters()
    memo = constantq.__dict__["__vqt_filter_fft"]
    assert memo.kebr_memoised
    # Speech and tones tuned apart (A at 440 Hz and a quarter of a semitone sharp): distinct tunings.
    waveforms = [speech, 0.5 * speech, tone(440.0, 2.0), tone(440.0 * 2 ** (0.25 / 12), 2.0)]
    tunings = {round(float(librosa.estimate_tuning(y=y, sr=SR, bins_per_octave=36)), 2) for y in waveforms}
    assert len(tunings) >= 2
    memo.banks.clear()
    first = [librosa33(y) for y in waveforms]
    built = len(memo.banks)
    assert 7 <= built <= 7 * len(waveforms)  # one bank per octave and tuning, shared where tunings agree
    again = [librosa33(y) for y in waveforms]
    assert len(memo.banks) == built  # the second pass built nothing
    monkeypatch.setattr(constantq, "__vqt_filter_fft", memo.__wrapped__)
    plain = [librosa33(y) for y in waveforms]
    for a, b, c in zip(first, again, plain):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, c)
    assert np.ptp(plain[2][:, 24:]) > 0.1  # the tone's chroma is not flat: the banks did real work


def test_egemaps_equals_direct_opensmile(speech):
    extractor = AudioFeatureExtractor(["egemaps"], max_frames=10_000)
    features = extractor.from_waveform(speech)
    times, expected, names = direct_egemaps(speech)
    assert extractor.columns == names and len(names) == 25
    assert names[0] == "Loudness_sma3" and "F0semitoneFrom27.5Hz_sma3nz" in names
    assert features.shape == expected.shape
    np.testing.assert_array_equal(features, expected)
    # max_frames counts rows of the first set: 400 rows of eGeMAPS are its first 4 s.
    np.testing.assert_array_equal(AudioFeatureExtractor(["egemaps"]).from_waveform(speech), expected[:400])
    # Frames every 10 ms (221 samples at 22,050 Hz), and a voiced speaker has a pitch.
    np.testing.assert_allclose(np.diff(times), 221 / SR, atol=1e-6)
    assert expected[:, names.index("F0semitoneFrom27.5Hz_sma3nz")].max() > 10


def test_concatenation_interpolates_onto_the_first_sets_grid(both, speech):
    features = both.from_waveform(speech)
    lib = librosa33(speech)
    times, ege, _ = direct_egemaps(speech)
    assert features.shape == (len(lib), 33 + 25)
    assert both.columns[:33] == LIBROSA33_COLUMNS and len(both.columns) == 58
    np.testing.assert_array_equal(features[:, :33], lib)  # the time base is untouched
    # egemaps linearly interpolated at librosa's frame centres t * 512 / 22050.
    grid = np.arange(len(lib)) * 512 / SR
    expected = np.stack([np.interp(grid, times, col) for col in ege.T], axis=1)
    np.testing.assert_allclose(features[:, 33:], expected, rtol=1e-5, atol=1e-5)
    # Each interpolated value lies between the two eGeMAPS frames around its grid time.
    right = np.clip(np.searchsorted(times, grid), 1, len(times) - 1)
    low = np.minimum(ege[right - 1], ege[right])
    high = np.maximum(ege[right - 1], ege[right])
    inside = (grid >= times[0]) & (grid <= times[-1])
    assert np.all((features[inside, 33:] >= low[inside] - 1e-4) & (features[inside, 33:] <= high[inside] + 1e-4))

    # The other order: eGeMAPS' own 10 ms frames are the time base and keep their exact values.
    reverse = AudioFeatureExtractor(["egemaps", "librosa33"], max_frames=10_000).from_waveform(speech)
    assert reverse.shape == (len(ege), 25 + 33)
    np.testing.assert_array_equal(reverse[:, :25], ege.astype(np.float32))
    # Interpolation never leaves the range of the librosa frames it came from.
    assert np.all(reverse[:, 25:].min(axis=0) >= lib.min(axis=0) - 1e-4)
    assert np.all(reverse[:, 25:].max(axis=0) <= lib.max(axis=0) + 1e-4)


def test_silent_audio_is_a_skip_not_a_zero_row(both, tmp_path):
    with pytest.raises(ClipError, match="audio: silent"):
        both.from_waveform(np.zeros(SR, dtype=np.float32))
    with pytest.raises(ClipError, match="audio: no samples"):
        both.from_waveform(np.zeros(0, dtype=np.float32))
    # Through a real file: an mp4 whose AAC track is all zeros.
    path = write_clip(tmp_path / "silent.mp4", None, fps=25, audio=np.zeros(SR, dtype=np.float32), sample_rate=16000)
    with pytest.raises(ClipError, match=r"audio: silent \(peak amplitude"):
        both.extract(Clip("s", video=str(path)))


def test_a_440_hz_tone_is_an_a(both):
    features = both.from_waveform(tone(440.0, 1.0))
    chroma = features[:, LIBROSA33_COLUMNS.index("chroma_C") : 33]
    assert np.all(chroma.argmax(axis=1) == CHROMA_A)
    np.testing.assert_allclose(chroma[:, CHROMA_A], 1.0, atol=1e-6)  # chroma_cqt max-normalises each frame
    assert chroma[5:-5, [i for i in range(12) if i != CHROMA_A]].max() < 0.5
    # A sine crosses zero twice per period: zcr = 2 * 440 / 22050 away from the padded edges.
    np.testing.assert_allclose(features[5:-5, 0], 2 * 440 / SR, atol=2e-3)


def test_a_one_frame_clip_still_works():
    features = AudioFeatureExtractor().from_waveform(tone(440.0, 300 / SR))  # 300 samples, 14 ms
    assert features.shape == (1, 33) and np.isfinite(features).all()
    assert features[0, 21 + CHROMA_A] == 1.0
    # Too short for eGeMAPS' 60 ms pitch window: a skip with the reason, not a NaN row.
    with pytest.raises(ClipError, match="too short for eGeMAPS"):
        AudioFeatureExtractor(["egemaps"]).from_waveform(tone(440.0, 0.03))


WARM_AND_EXTRACT = """
import sys
import numpy as np
from kebr.features.audio import AudioFeatureExtractor
extractor = AudioFeatureExtractor()
extractor.warm()
np.save(sys.argv[1], extractor.from_waveform(np.load(sys.argv[2])))
"""


def test_parallel_workers_compile_one_at_a_time(tmp_path, monkeypatch):
    """Workers starting together on a cold numba cache queue on the compile lock (two at once can
    corrupt librosa's cached kernels, numba #10128) and then agree with an in-process computation."""
    import subprocess
    import sys
    import time

    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "numba"))
    y = tone(440.0, 1.5)
    np.save(tmp_path / "y.npy", y)
    with audio.numba_compile_lock():
        workers = [subprocess.Popen([sys.executable, "-c", WARM_AND_EXTRACT, str(tmp_path / f"out{i}.npy"),
                                     str(tmp_path / "y.npy")]) for i in range(2)]
        time.sleep(5)
        assert [w.poll() for w in workers] == [None, None]  # both wait for the lock
    assert [w.wait(timeout=300) for w in workers] == [0, 0]
    assert (tmp_path / "numba" / "kebr-compile.lock").exists()
    expected = librosa33(y)
    for i in range(2):
        np.testing.assert_allclose(np.load(tmp_path / f"out{i}.npy"), expected, atol=1e-5)


def test_after_compile_kernels_no_process_writes_the_numba_cache(tmp_path):
    """scripts/setup.sh fills librosa's numba cache in one process (``compile_kernels``); extracting
    real speech afterwards, straight and through 16 kHz, loads every kernel and writes none (a process
    that compiles kernels of its own can break the cache for every later one: numba #10128)."""
    wav = tmp_path / "speech.wav"
    samples, sr = synthesize("the movie was wonderful and the cast was great")
    soundfile.write(wav, samples, sr)
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba")}
    compile_step = "from kebr.features.audio import compile_kernels; compile_kernels()"
    subprocess.run([sys.executable, "-c", compile_step], env=env, check=True, timeout=300)
    cached = {p: p.stat().st_mtime_ns for p in (tmp_path / "numba").rglob("*.nb*")}
    assert any(p.name.startswith("guf-") for p in cached)  # librosa's gufuncs are what breaks
    extract = ("import sys; from kebr.features.audio import AudioFeatureExtractor as A; from kebr.media import load_audio\n"
               "for via, res in ((None, 'soxr_hq'), (16000, 'kaiser_best')):\n"
               "    a = A(resample_via=via, resampler=res)\n"
               "    y = load_audio(sys.argv[1], via or 22050)\n"
               "    print(a.from_waveform(y if via is None else a.resample(y)).shape)")
    result = subprocess.run([sys.executable, "-c", extract, str(wav)], env=env, check=True, timeout=300,
                            capture_output=True, text=True)
    assert result.stdout.count(", 33)") == 2
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "numba").rglob("*.nb*")} == cached
