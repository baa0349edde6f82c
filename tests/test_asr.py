"""ASR and the English filter on real speech: eSpeak NG voices through the bundled tiny.en alone,
that is the filter's transcript rules (``language.id_model: none``; language ID: tests/test_langid.py).

Speech goes through the pipeline's real path: synthesized, written to MP4 (AAC) with
kebr.media.write_clip, decoded and resampled to 16 kHz by kebr.media.load_audio, then transcribed.

Values observed while tuning the filter (tiny.en int8 on CPU, batched pipeline, beam 5):
avg_logprob of English TTS (10 sentences x 6 voices/rates) -0.05 to -0.70; the same English with
white noise at 20 / 10 / 5 dB SNR down to -0.78 / -0.87 / -0.91; non-English TTS (de, es, fr, it, pt,
nl, pl, ru, hi; 26 sentences), all transcribed as English words, -0.53 to -1.59, 21 of 26 below
-0.8. Silence: text ". . .", no_speech_prob 0.95; white noise and a tone melody: "you" with
no_speech_prob 0.84-0.96 and avg_logprob -1.3 to -1.4. Hence min_avg_logprob = -0.8: it kept every
clean English clip and 27 of 30 noisy ones, and dropped 21 of 26 non-English ones (German, closest to
English, is the hardest: 5 of 8).
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch
from whisper.model import ModelDimensions, Whisper

from kebr.asr import SAMPLE_RATE, Transcript, make_transcriber, needs_asr, transcribe_clips
from kebr.clips import Clip, SkipKind
from kebr.langid import MAX_ENCODER_FRAMES
from kebr.language import english_filter, english_word_fraction
from kebr.media import load_audio, write_clip
from kebr.demo.tts import synthesize

SPOKEN = {
    "english": ("This movie was really wonderful.", "en-us"),
    "english2": ("We went to the beach and played football all afternoon.", "en-gb-x-rp"),
    "spanish": ("Ayer vi una película muy bonita en el cine.", "es"),
    "german": ("Meine Mutter kocht jeden Sonntag für die ganze Familie.", "de"),
}


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Clip]:
    """Real media files, one per case, written as the pipeline would meet them."""
    root = tmp_path_factory.mktemp("asr")
    out: dict[str, Clip] = {}
    for name, (text, voice) in SPOKEN.items():
        samples, rate = synthesize(text, voice)
        out[name] = Clip(name, audio=str(write_clip(root / f"{name}.mp4", None, 25, samples, rate)))
    rng = np.random.default_rng(0)
    tone = np.repeat([440.0, 554.0, 659.0, 880.0, 659.0, 554.0], SAMPLE_RATE // 2)
    nonspeech = {
        "silence": np.zeros(3 * SAMPLE_RATE, np.float32),
        "noise": 0.1 * rng.standard_normal(3 * SAMPLE_RATE),
        "music": 0.3 * np.sin(2 * np.pi * np.cumsum(tone) / SAMPLE_RATE),
    }
    # A 36 s clip: two 30 s decoding windows, the second sentence starting at 31 s.
    first, second = (load_audio(out[name].media, SAMPLE_RATE) for name in ("english", "english2"))
    long = np.zeros(36 * SAMPLE_RATE, np.float32)
    long[: len(first)] = first
    long[31 * SAMPLE_RATE : 31 * SAMPLE_RATE + len(second)] = second
    nonspeech["long"] = long
    for name, samples in nonspeech.items():
        out[name] = Clip(name, audio=str(write_clip(root / f"{name}.mp4", None, 25, samples, SAMPLE_RATE)))
    frames = np.full((5, 32, 32, 3), 128, np.uint8)
    out["no_audio"] = Clip("no_audio", video=str(write_clip(root / "video only.mp4", frames, 25, audio=None)))
    out["gold"] = Clip("gold", video=str(root / "never read.mp4"), text=" What a great film! ")
    return out


@pytest.fixture(scope="module")
def tiny_en():
    return make_transcriber(cpu_threads=2)  # the bundled tiny.en, int8 on this CPU-only machine


@pytest.fixture(scope="module")
def results(clips: dict[str, Clip], tiny_en) -> dict[str, dict]:
    rows = list(transcribe_clips(list(clips.values()), tiny_en))
    assert [r["clip_id"] for r in rows] == list(clips), "one row per clip, in input order"
    for r in rows:
        if "error" not in r:
            print(r["clip_id"], round(r["avg_logprob"], 3), round(r["no_speech_prob"], 3), repr(r["text"]))
    return {r["clip_id"]: r for r in rows}


def _transcript(row: dict) -> Transcript:
    # Through JSON text, as the stage output stores it.
    return Transcript.from_json(json.loads(json.dumps({k: v for k, v in row.items() if k != "clip_id"})))


def test_english_speech_is_transcribed_with_word_times(results: dict[str, dict], clips: dict[str, Clip]) -> None:
    t = _transcript(results["english"])
    assert t.source == "asr" and t.language == "en" and t.language_prob == 1.0 and t.language_model is None
    assert "movie" in t.text.lower() and "wonderful" in t.text.lower()
    assert -0.6 < t.avg_logprob < 0 and 0 <= t.no_speech_prob < 0.3
    duration = len(load_audio(clips["english"].media, SAMPLE_RATE)) / SAMPLE_RATE
    starts = [w[1] for w in t.words]
    assert starts == sorted(starts) and len(t.words) >= 4
    assert all(0 <= s <= e <= duration and 0 <= p <= 1 for _, s, e, p in t.words)
    spoken = [w[0].lower().strip(".,") for w in t.words]
    assert "wonderful" in spoken and spoken.index("movie") < spoken.index("wonderful")
    assert english_filter(t) is None
    assert english_word_fraction(t.text) == 1.0


def test_long_clip_is_decoded_in_30s_windows(results: dict[str, dict]) -> None:
    t = _transcript(results["long"])
    assert "movie" in t.text.lower() and "football" in t.text.lower()
    times = {w[0].lower().strip(".,"): w[1] for w in t.words}
    assert times["movie"] < 3 and 31 <= times["football"] <= 36
    assert english_filter(t) is None


def test_non_english_speech_is_dropped_by_the_english_only_rule(results: dict[str, dict]) -> None:
    for name in ("spanish", "german"):
        t = _transcript(results[name])
        # tiny.en writes English words for it; its confidence gives it away.
        assert t.language == "en" and t.text
        reason = english_filter(t)
        assert reason is not None and reason.startswith("language: low ASR confidence"), (name, t.avg_logprob, reason)
        assert t.avg_logprob < -0.85


def test_silence_noise_and_music_are_dropped(results: dict[str, dict]) -> None:
    silence = _transcript(results["silence"])
    assert english_filter(silence) == "language: no speech (signal -120.0 dBFS < -60)"  # digital silence
    assert silence.no_speech_prob > 0.8
    # Through AAC, white noise came out as ". . ." (no_speech_prob 0.60) and the tone melody as
    # "beep" (no_speech_prob 0.45, avg_logprob -1.9): dropped as empty or as undecodable.
    for name in ("noise", "music"):
        t = _transcript(results[name])
        reason = english_filter(t)
        assert reason is not None and reason.split(" (")[0] in (
            "language: empty transcript", "language: no speech detected", "language: low ASR confidence"), (name, t)
        assert t.avg_logprob < -1.0


def test_clip_without_audio_stream_is_an_error_row(results: dict[str, dict]) -> None:
    row = results["no_audio"]
    assert (row["error"], row["kind"]) == ("media: no audio stream", SkipKind.NO_AUDIO_STREAM) and row["duration_s"] > 0


def test_gold_text_skips_audio_and_model(clips: dict[str, Clip]) -> None:
    gold = clips["gold"]  # its media file does not exist: reading it would be an error row
    assert not needs_asr(gold) and needs_asr(gold, use_gold_text=False)
    assert needs_asr(Clip("blank", audio="x.wav", text="  "))
    (row,) = transcribe_clips([gold], transcriber=None)
    assert row == {"clip_id": "gold", "text": "What a great film!", "words": [], "avg_logprob": 0.0,
                   "no_speech_prob": 0.0, "language": "en", "language_prob": 1.0, "source": "gold",
                   "language_model": None, "english_prob": None, "language_no_speech_prob": None, "signal_dbfs": None,
                   "duration_s": None}  # its media is never opened
    assert english_filter(_transcript(row)) is None
    with pytest.raises(ValueError, match="no transcriber"):
        list(transcribe_clips([gold], transcriber=None, use_gold_text=False))


def test_batch_and_single_clip_decoding_agree(results: dict[str, dict], clips: dict[str, Clip], tiny_en) -> None:
    single = tiny_en.transcribe(load_audio(clips["english2"].media, SAMPLE_RATE))
    assert single.text == results["english2"]["text"]
    assert "football" in single.text.lower()
    assert math.isclose(single.avg_logprob, results["english2"]["avg_logprob"], abs_tol=0.02)


def _transcript_of(**fields) -> Transcript:
    base = dict(text="I really liked it", words=[], avg_logprob=-0.3, no_speech_prob=0.05,
                language="en", language_prob=0.98, source="asr")
    return Transcript(**{**base, **fields})


def test_asr_encodes_the_clips_window_and_transcribes_as_at_30_s(clips: dict[str, Clip], tiny_en) -> None:
    # tiny.en reads a short clip padded to 20 s, not 30 s (kebr.langid.encoder_frames), whatever else its
    # batch holds; a long clip's full windows stay 30 s. On clean English the words are the
    # ones the 30 s window gives, with the English filter's scores close to them.
    names = ("english", "english2", "long")
    audios = [load_audio(clips[name].media, SAMPLE_RATE) for name in names]
    calls = []
    encode = tiny_en.model.encode
    tiny_en.model.encode = lambda features: calls.append(features.shape) or encode(features)
    try:
        short = [tiny_en.transcribe_batch([audio])[0] for audio in audios]
        tiny_en.window_frames = MAX_ENCODER_FRAMES
        padded = [tiny_en.transcribe_batch([audio])[0] for audio in audios]
    finally:
        del tiny_en.model.encode
        tiny_en.window_frames = None
    seconds = [len(a) / SAMPLE_RATE for a in audios]
    assert seconds[0] < 20 and seconds[1] < 20
    # the 36 s clip's two windows, 30 s and 6 s, each in its own length (a batch is cut where it changes)
    assert calls == [(1, 80, 2000), (1, 80, 2000), (1, 80, 3000), (1, 80, 2000), (1, 80, 3000), (1, 80, 3000),
                     (2, 80, 3000)]
    for name, a, b in zip(names, short, padded):
        assert a.text == b.text, name
        assert abs(a.avg_logprob - b.avg_logprob) < 0.05 and abs(a.no_speech_prob - b.no_speech_prob) < 0.05, name
        assert english_filter(a) is None and english_filter(b) is None
        assert [w[0] for w in a.words] == [w[0] for w in b.words]
        assert all(abs(x[1] - y[1]) < 0.5 for x, y in zip(a.words, b.words)), name


def test_english_filter_rules() -> None:
    # Multilingual models: their language ID decides.
    # An identified language (language ID or a multilingual ASR model): English unlikely -> dropped;
    # else the transcript rules below still apply.
    identified = dict(language_model="bundled-base")
    assert english_filter(_transcript_of(english_prob=0.98, **identified)) is None
    assert english_filter(_transcript_of(language="de", language_prob=0.93, english_prob=0.04, **identified)) == (
        "language: detected 'de' (p=0.93, English p=0.04)")
    assert english_filter(_transcript_of(language="la", language_prob=0.4, english_prob=0.3, **identified)) is None
    assert english_filter(_transcript_of(english_prob=0.9, avg_logprob=-1.5, **identified)) == (
        "language: low ASR confidence (avg_logprob=-1.50 < -0.8)")
    # tiny.en's no-speech rule alone says nothing once a language model heard the clip (issue 14, hole 6):
    # no_speech needs the language model's own no-speech probability too (tests/test_langid.py).
    assert english_filter(_transcript_of(text="you", no_speech_prob=0.9, avg_logprob=-1.2, english_prob=0.0,
                                         **identified)) == "language: detected 'en' (p=0.98, English p=0.00)"
    assert english_filter(_transcript_of(text="you", no_speech_prob=0.9, avg_logprob=-1.2, english_prob=0.0,
                                         language_no_speech_prob=0.8, **identified)) == (
        "language: no speech detected by either model (bundled-base no_speech_prob=0.80; ASR no_speech_prob=0.90, "
        "avg_logprob=-1.20)")
    # English assumed (an English-only model with language.id_model none): the transcript rules, in order.
    assert english_filter(_transcript_of(text=" ... ")) == "language: empty transcript (no speech)"
    assert english_filter(_transcript_of(text="you", no_speech_prob=0.9, avg_logprob=-1.2)) == (
        "language: no speech detected (no_speech_prob=0.90, avg_logprob=-1.20)")
    assert english_filter(_transcript_of(avg_logprob=-0.9)) == (
        "language: low ASR confidence (avg_logprob=-0.90 < -0.8)")
    german = _transcript_of(text="Ich habe gestern einen schönen Film gesehen")  # 2 of 7 words in the vocab
    assert english_filter(german) == "language: transcript not English (29% English words < 60%)"
    # A confident English transcript with no speech token probability above the limit is kept.
    assert english_filter(_transcript_of(no_speech_prob=0.9)) is None
    # Gold transcripts: kept unless empty.
    assert english_filter(_transcript_of(text="Ich mag es", avg_logprob=0.0, source="gold")) is None
    assert english_filter(_transcript_of(text="", source="gold")) is not None


@pytest.mark.parametrize("n_vocab", [51864, 51865])  # English-only and multilingual vocabularies
def test_openai_whisper_loads_a_local_checkpoint(tmp_path, clips: dict[str, Clip], n_vocab: int) -> None:
    torch.manual_seed(0)
    # n_text_ctx 32 bounds decoding at 16 tokens: random weights never stop on their own.
    dims = ModelDimensions(n_mels=80, n_audio_ctx=1500, n_audio_state=64, n_audio_head=2, n_audio_layer=1,
                           n_vocab=n_vocab, n_text_ctx=32, n_text_state=64, n_text_head=2, n_text_layer=1)
    model = Whisper(dims)
    # whisper leaves the decoder's positional embedding uninitialised (torch.empty) for loading.
    torch.nn.init.normal_(model.decoder.positional_embedding, std=0.02)
    path = tmp_path / "random.pt"
    torch.save({"dims": dims.__dict__, "model_state_dict": model.state_dict()}, path)

    transcriber = make_transcriber(backend="openai-whisper", model=str(path), device="cpu")
    assert transcriber.multilingual is (n_vocab == 51865)
    audio = load_audio(clips["english"].media, SAMPLE_RATE)[:SAMPLE_RATE]
    (t,) = transcriber.transcribe_batch([audio])
    assert isinstance(t, Transcript) and t.source == "asr" and isinstance(t.text, str)
    assert math.isfinite(t.avg_logprob) and t.avg_logprob <= 0 and 0 <= t.no_speech_prob <= 1
    assert all(isinstance(w, str) and 0 <= s <= e <= 1.0 and 0 <= p <= 1 for w, s, e, p in t.words)
    if n_vocab == 51865:  # identified by the model itself
        assert len(t.language) in (2, 3) and 0 < t.language_prob <= 1 and t.language_model == str(path)
        assert 0 <= t.english_prob <= t.language_prob
    else:
        assert (t.language, t.language_prob, t.language_model, t.english_prob) == ("en", 1.0, None, None)
    assert Transcript.from_json(json.loads(json.dumps(t.to_json()))) == t


def test_unknown_backend_and_bundled_openai_model_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown backend"):
        make_transcriber(backend="kaldi")
    for model in ("bundled", "bundled-base"):
        with pytest.raises(ValueError, match="bundled models are for faster-whisper"):
            make_transcriber(backend="openai-whisper", model=model)


def test_asr_jobs_share_the_gpu_through_slots() -> None:
    from types import SimpleNamespace

    from kebr.config import validate_config
    from kebr.resources import asr_gpu_slots, gpus

    vox = SimpleNamespace(get=lambda key: "vox" if key == "dataset" else None)
    datasets = {"vox": {"layout": "voxceleb2", "root": "/v"}}
    cuda, cpu = (validate_config({"datasets": datasets, "asr": {"device": d}}) for d in ("cuda", "cpu"))
    local = SimpleNamespace(global_resources={"asr_gpu_slots": 4, "gpu": 1}, local_exec=True)  # profiles/local
    slurm = SimpleNamespace(global_resources={"asr_gpu_slots": 8}, local_exec=False)  # profiles/slurm
    bare = SimpleNamespace(global_resources={"gpu": 1}, local_exec=True)  # no slots declared
    assert asr_gpu_slots(cuda)(vox) == 1 and asr_gpu_slots(cpu)(vox) == 0
    # On one node the slots share the GPU: no whole `gpu` per ASR job; training still takes it.
    assert gpus(cuda, "asr", local)(vox) == 0
    cuda_training = validate_config({"datasets": datasets, "pretrain": {"device": "cuda"}})
    assert gpus(cuda_training, "pretrain", local)(vox) == 1
    # A cluster job is an allocation of its own: it asks for its GPU; without slots, as before.
    assert gpus(cuda, "asr", slurm)(vox) == 1 and gpus(cuda, "asr", bare)(vox) == 1 and gpus(cuda, "asr")(vox) == 1
    assert gpus(cpu, "asr", local)(vox) == 0


def test_ctranslate2_threads_follow_the_job(monkeypatch) -> None:
    from kebr.asr import default_cpu_threads, load_faster_whisper

    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # Snakemake sets it from the rule's threads
    assert default_cpu_threads() == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert default_cpu_threads() == min(4, len(os.sched_getaffinity(0)))  # not CTranslate2's 4 on 2 cores
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    model = load_faster_whisper("bundled", device="cpu")
    assert model.model.num_workers == 1  # one replica: one pool of threads, not one per replica


def test_bench_asr_dry_run_runs_the_stage_through_kebr_asr_jobs(tmp_path) -> None:
    """bench/asr.py --device cuda's code, tiny, on the CPU: `kebr asr` jobs on real decoded files with
    language ID on, GPU sampling that reports why it has no sample here."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    result = subprocess.run([sys.executable, str(repo / "bench" / "asr.py"), "--dry-run", "--clips", "3"],
                            capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert (out["bench"], out["dry_run"], out["device"], out["clips"], out["jobs"]) == ("asr_gpu", True, "cpu", 3, 1)
    assert out["language_ids"] == ["bundled-base"] and out["wer"] < 0.2  # real speech, decoded
    assert out["clips_per_s"] > 0 and out["rtfx"] > 0 and len(out["worker_ready_s"]) == 1
    assert out["gpu_util_samples"] == 0 and "nvidia-smi" in out["gpu_util_error"]


class _CountingExtractor:
    """A faster-whisper FeatureExtractor that counts its log-mel computations."""

    def __init__(self, inner) -> None:
        self.inner, self.calls = inner, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.inner(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_one_log_mel_per_window_for_both_models_and_the_librarys_own_results(clips: dict[str, Clip]) -> None:
    from faster_whisper.transcribe import BatchedInferencePipeline

    transcriber = make_transcriber(cpu_threads=2, language_id="bundled-base")  # the defaults: tiny.en + base
    assert transcriber.shared_features
    asr_mel = transcriber.model.feature_extractor = _CountingExtractor(transcriber.model.feature_extractor)
    identifier = transcriber.language_id
    lid_mel = identifier.model.feature_extractor = _CountingExtractor(identifier.model.feature_extractor)
    audios = {name: load_audio(clips[name].media, SAMPLE_RATE) for name in ("english", "english2", "long")}
    transcriber.window_frames = MAX_ENCODER_FRAMES  # the library's 30 s window, to compare with its own path
    ours = {name: transcriber.transcribe_batch([audio])[0] for name, audio in audios.items()}
    assert (asr_mel.calls, lid_mel.calls) == (4, 0), "one log-mel per 30 s window (the 36 s clip has 2), shared"

    library = BatchedInferencePipeline(transcriber.model)  # what the stage ran before: the library's own path
    for name, audio in audios.items():
        if len(audio) > 30 * SAMPLE_RATE:
            continue  # the library cuts no windows of its own with clip_timestamps
        segments, _ = library.transcribe(audio, clip_timestamps=[{"start": 0, "end": len(audio) / SAMPLE_RATE}],
                                         beam_size=5, word_timestamps=True, vad_filter=False)
        segments = list(segments)
        t = ours[name]
        assert t.text == " ".join(s.text.strip() for s in segments)
        assert t.avg_logprob == pytest.approx(segments[0].avg_logprob, abs=1e-6)
        assert [(w[0], w[1], w[2]) for w in t.words] == [(w.word.strip(), w.start, w.end) for s in segments
                                                          for w in s.words]
        # The language ID read the shared log-mel: the same probabilities as reading the audio itself.
        (probs,) = identifier.probabilities([audio])
        assert (t.language, t.language_prob, t.english_prob) == ("en", probs["en"], probs["en"])
