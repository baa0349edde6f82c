"""The English filter on a spoken test set of 11 languages: tiny.en's confidence vs language ID.

    python bench/langid.py [--asr-model bundled] [--id-model bundled-base] [--compute-type auto]
                           [--cpu-threads 0] [--compare-30s] [--rows clips.jsonl] [--from-rows clips.jsonl]

eSpeak NG (kebr.demo.tts) speaks 4 sentences in each of 10 languages with 3 voices each (120 clips),
8 English sentences of the demo corpus with the 7 English voices (56 clips), and the same English
with white noise at 10 and 5 dB SNR (2 voices, 32 clips). Every clip goes through the pipeline's
media path (AAC in MP4, decoded and resampled to 16 kHz) and is transcribed once by the ASR model
(``--asr-model``; default the config's tiny.en), and the language ID (``id_model``) reads it as the
stage does (its window, one clip at a time on CPU); a multilingual ASR model (``--asr-model
bundled-base``) is its own language ID, from the same encoder pass, as in the stage. With
``--compare-30s``, both models read every clip once more padded to 30 s. The English filter then
judges each clip three ways: the transcript rules alone (``language.id_model: none``), the default
(language model first, then the transcript rules: ``english_decision``, with the language model's
no-speech probability and the clip's level; with ``--compare-30s`` also in the 30 s window), and the
language ID alone (English most probable at p >= 0.5, as a language-ID service would pick). Prints
one JSON object, also written to bench/results/langid.json (langid-<asr-model>.json for another ASR
model): language-ID accuracy, non-English clips kept and English clips dropped by each rule, the
clips whose decision the stage's window changes against 30 s (``window_vs_30s``), and the cost per
clip (wall and process CPU seconds, model loading apart). ``--rows`` keeps each clip's transcript
and language scores; ``--from-rows`` judges such a file again without the models (the rules only,
no timing).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from kebr.asr import SAMPLE_RATE, Transcript, exec_with_worker_env, make_language_identifier, make_transcriber
from kebr.demo.corpus import SENTENCES
from kebr.langid import MAX_ENCODER_FRAMES, WINDOW_SAMPLES, log_mel
from kebr.language import english_decision, english_filter
from kebr.media import load_audio, write_clip
from kebr.demo.tts import ENGLISH_VOICES, synthesize

# Whisper's language code -> everyday sentences (films, family, travel: what talking heads say).
SPOKEN: dict[str, tuple[str, ...]] = {
    "de": ("Meine Mutter kocht jeden Sonntag für die ganze Familie.",
           "Der Film war wirklich wunderbar, ich habe ihn sehr genossen.",
           "Gestern Abend sind wir mit dem Fahrrad in die Stadt gefahren.",
           "Ich finde die Schauspieler schrecklich und die Geschichte langweilig."),
    "fr": ("Hier soir, nous avons regardé un très beau film au cinéma.",
           "Ma sœur travaille dans une petite boulangerie près de la gare.",
           "Je n'ai pas du tout aimé la fin de cette histoire.",
           "Le week-end prochain, nous partons à la montagne avec nos amis."),
    "es": ("Ayer vi una película muy bonita en el cine.",
           "Mi hermano vive en una casa grande cerca del mar.",
           "La comida del restaurante estaba fría y el servicio fue terrible.",
           "Este fin de semana vamos a visitar a mis abuelos en el pueblo."),
    "it": ("Ieri sera abbiamo mangiato una pizza buonissima a Napoli.",
           "Il film era troppo lungo e la storia non aveva senso.",
           "Mia nonna racconta sempre storie divertenti della sua giovinezza.",
           "Domani mattina prendo il treno per andare a lavorare a Milano."),
    "nl": ("Gisteren zijn we met de fiets naar het strand gegaan.",
           "Ik vond de film erg spannend en de muziek was prachtig.",
           "Mijn buurman heeft een grote hond die elke ochtend blaft.",
           "Volgende week gaan we met de hele familie op vakantie."),
    "pt": ("Ontem fomos ao cinema e o filme foi muito bom.",
           "A minha irmã trabalha num hospital no centro da cidade.",
           "Não gostei nada do final, foi uma grande desilusão.",
           "No domingo vamos almoçar em casa dos meus avós."),
    "pl": ("Wczoraj wieczorem oglądaliśmy bardzo ciekawy film w kinie.",
           "Moja siostra mieszka w małym mieszkaniu niedaleko rzeki.",
           "Ten film był nudny i zdecydowanie za długi.",
           "W przyszłym tygodniu jedziemy w góry z przyjaciółmi."),
    "sv": ("Igår kväll såg vi en väldigt rolig film på bio.",
           "Min bror bor i ett litet hus nära sjön.",
           "Jag tyckte inte om slutet, det var mycket tråkigt.",
           "Nästa sommar ska vi resa till Norge med hela familjen."),
    "ru": ("Вчера вечером мы смотрели очень интересный фильм.",
           "Моя сестра работает в большой больнице в центре города.",
           "Мне совсем не понравился конец этой истории.",
           "В следующие выходные мы поедем на дачу к бабушке."),
    "tr": ("Dün akşam sinemada çok güzel bir film izledik.",
           "Kız kardeşim şehir merkezindeki bir hastanede çalışıyor.",
           "Filmin sonunu hiç beğenmedim, çok sıkıcıydı.",
           "Gelecek hafta sonu ailemle birlikte denize gideceğiz."),
}
VARIANTS = (("", 160), ("+f3", 150), ("+m3", 175))  # (eSpeak voice variant, words per minute)
ENGLISH = tuple(SENTENCES[i][0] for i in (0, 5, 10, 15, 20, 25, 30, 35))
NOISY_VOICES, SNRS_DB = ("en-us", "en-gb-x-rp"), (10, 5)
RESULTS = Path(__file__).resolve().parent / "results"
SWEEP_MIN_AVG_LOGPROB = (-0.5, -0.6, -0.7, -0.8, -0.9, -1.0)


@dataclasses.dataclass
class SpokenClip:
    group: str  # "en", "en_noisy" or the language code
    language: str  # the spoken language's Whisper code
    voice: str
    text: str
    audio: np.ndarray  # 16 kHz mono, after the AAC round trip


def make_test_set(work: Path) -> list[SpokenClip]:
    rng = np.random.default_rng(0)
    specs = [("en", "en", voice, 160, text, None) for text in ENGLISH for voice in ENGLISH_VOICES]
    specs += [("en_noisy", "en", voice, 160, text, snr) for text in ENGLISH for voice in NOISY_VOICES for snr in SNRS_DB]
    specs += [(lang, lang, lang + variant, rate, text, None)
              for lang, texts in SPOKEN.items() for text in texts for variant, rate in VARIANTS]
    clips = []
    for i, (group, language, voice, rate, text, snr) in enumerate(specs):
        samples, sample_rate = synthesize(text, voice, rate=rate)
        if snr is not None:
            noise = rng.standard_normal(len(samples)).astype(np.float32)
            noise *= np.sqrt(np.mean(samples**2) / 10 ** (snr / 10)) / np.sqrt(np.mean(noise**2))
            samples = np.clip(samples + noise, -1, 1)
        path = write_clip(work / f"{i:04d}.mp4", None, 25, samples, sample_rate)
        clips.append(SpokenClip(group, language, voice, text, load_audio(path, SAMPLE_RATE)))
    return clips


def timed(fn, *args):  # type: ignore[no-untyped-def]
    """(fn's result, wall seconds, CPU seconds of this process, all threads)."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn(*args)
    return result, time.perf_counter() - wall, time.process_time() - cpu


def batched(fn, items: list, size: int) -> list:  # type: ignore[type-arg]
    return [out for first in range(0, len(items), size) for out in fn(items[first : first + size])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--asr-model", default="bundled", help="asr.model: bundled (tiny.en) or bundled-base")
    parser.add_argument("--id-model", default="bundled-base", help="language.id_model (an English-only ASR model's)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--compute-type", default="auto")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--cpu-threads", type=int, default=0, help="0: CTranslate2's default")
    parser.add_argument("--compare-30s", action="store_true",
                        help="also run the language ID with every clip padded to 30 s and compare (2x its cost)")
    parser.add_argument("--rows", type=Path, help="also write one JSON line per clip here")
    parser.add_argument("--from-rows", type=Path, help="no models: judge the clips of a --rows file again")
    args = parser.parse_args()
    exec_with_worker_env()  # the ASR worker's environment (kebr.asr.WORKER_ENV), as the stage runs

    seconds: dict[str, object] = {}
    if args.from_rows:  # the rules again on a previous run's transcripts and language probabilities
        rows = [json.loads(line) for line in args.from_rows.read_text(encoding="utf-8").splitlines()]
        groups = [(r["group"], r["language"]) for r in rows]
        transcripts = [Transcript(r["transcript"], [], r["avg_logprob"], r["no_speech_prob"], "en", 1.0, "asr",
                                  signal_dbfs=r["signal_dbfs"]) for r in rows]
        scores = [({**r["top"], "en": r["p_en"]}, r["language_no_speech_prob"]) for r in rows]
        scores_30s = ([({**r["top_30s"], "en": r["p_en_30s"]}, r["language_no_speech_prob_30s"]) for r in rows]
                      if "p_en_30s" in rows[0] else None)
        transcripts_30s = ([Transcript(r["transcript_30s"], [], r["avg_logprob_30s"], r["no_speech_prob_30s"], "en", 1.0,
                                       "asr", signal_dbfs=r["signal_dbfs"]) for r in rows]
                           if "transcript_30s" in rows[0] else transcripts)
    else:
        with tempfile.TemporaryDirectory(prefix="kebr-langid-") as work:
            clips = make_test_set(Path(work))
        groups = [(c.group, c.language) for c in clips]
        audios = [c.audio for c in clips]
        asr, asr_load_s, _ = timed(make_transcriber, "faster-whisper", args.asr_model, args.device, args.compute_type,
                                   args.batch_size, 5, args.cpu_threads)
        transcripts, asr_wall, asr_cpu = timed(batched, asr.transcribe_batch, audios, args.batch_size)
        if asr.multilingual:  # its own language scores, from the encoder pass of its first window
            if args.compare_30s:
                parser.error("--compare-30s compares the language ID's windows: an English-only --asr-model")
            args.id_model = args.asr_model
            scores = [({t.language: t.language_prob, "en": t.english_prob or 0.0}, t.language_no_speech_prob or 0.0)
                      for t in transcripts]
            id_load_s = id_wall = id_cpu = 0.0
            id_batch = args.batch_size
        else:
            identifier, id_load_s, _ = timed(make_language_identifier, args.id_model, args.device, args.compute_type,
                                             args.batch_size, args.cpu_threads)
            # As the stage runs it: the identifier's own batches (one clip at a time on CPU) and window.
            mels = [log_mel(identifier.model.feature_extractor, a[:WINDOW_SAMPLES]) for a in audios]
            scores, id_wall, id_cpu = timed(identifier.scores_from_features, mels)
            id_batch = identifier.batch_size
        # The same with both models' encoders padded to Whisper's 30 s (faster-whisper's detect_language
        # and transcribe), as the stage ran before their windows followed the clip's length
        # (kebr.langid.encoder_frames): what the shorter windows change.
        scores_30s, transcripts_30s = None, transcripts
        if args.compare_30s:
            scores_30s, _, id_cpu_30s = timed(identifier.scores_from_features, mels, True, MAX_ENCODER_FRAMES)
            asr.window_frames = MAX_ENCODER_FRAMES
            transcripts_30s, _, asr_cpu_30s = timed(batched, asr.transcribe_batch, audios, args.batch_size)
            asr.window_frames = None
        n = len(audios)
        seconds = {
            "device": asr.model.model.device, "cpus": os.cpu_count(), "load_avg": round(os.getloadavg()[0], 1),
            "asr_load": round(asr_load_s, 2), "language_id_load": round(id_load_s, 2),
            "asr_per_clip": {"wall": round(asr_wall / n, 3), "cpu": round(asr_cpu / n, 3)},
            "language_id_per_clip": {"wall": round(id_wall / n, 3), "cpu": round(id_cpu / n, 3),
                                     "batch_size": id_batch},
        }
        if scores_30s is not None:
            seconds["language_id_per_clip_30s_window"] = {"cpu": round(id_cpu_30s / n, 3)}
            seconds["asr_per_clip_30s_window"] = {"cpu": round(asr_cpu_30s / n, 3)}
        if args.rows:
            with args.rows.open("w", encoding="utf-8") as f:
                for i, (c, t, (p, ns)) in enumerate(zip(clips, transcripts, scores)):
                    row = {"group": c.group, "language": c.language, "voice": c.voice, "text": c.text,
                           "transcript": t.text, "avg_logprob": t.avg_logprob, "no_speech_prob": t.no_speech_prob,
                           "signal_dbfs": t.signal_dbfs, "top": top_languages(p), "p_en": p.get("en", 0.0),
                           "language_no_speech_prob": ns}
                    if scores_30s is not None:
                        p30, ns30 = scores_30s[i]
                        t30 = transcripts_30s[i]
                        row.update(top_30s=top_languages(p30), p_en_30s=p30.get("en", 0.0),
                                   language_no_speech_prob_30s=ns30, transcript_30s=t30.text,
                                   avg_logprob_30s=t30.avg_logprob, no_speech_prob_30s=t30.no_speech_prob)
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")

    probabilities = [p for p, _ in scores]
    detected = [max(p, key=p.__getitem__) for p in probabilities]
    with_id = with_language(transcripts, scores, args.id_model)
    reasons = {
        # language.id_model: none -- tiny.en's confidence and the English-word share
        "old_rule": [english_filter(dataclasses.replace(t, language="en", language_prob=1.0, language_model=None,
                                                        english_prob=None, language_no_speech_prob=None))
                     for t in transcripts],
        # the default: the language ID vetoes unlikely English, then the same transcript rules
        "language_id_and_transcript": [english_filter(t) for t in with_id],
        # what a language-ID service alone would keep: English the most probable, p >= 0.5
        "language_id_alone": [None if lang == "en" and p[lang] >= 0.5 else f"language: detected {lang!r}"
                              for lang, p in zip(detected, probabilities)],
    }
    if scores_30s is not None:  # the default with every clip padded to 30 s (as the stage did before)
        with_id_30s = with_language(transcripts_30s, scores_30s, args.id_model)
        reasons["language_id_30s_and_transcript"] = [english_filter(t) for t in with_id_30s]
    totals = Counter(g for g, _ in groups)
    non_english = [g for g in totals if g not in ("en", "en_noisy")]
    results: dict[str, object] = {"clips": dict(totals), "asr_model": args.asr_model, "id_model": args.id_model,
                                  "compute_type": args.compute_type, "batch_size": args.batch_size}

    def tally(rule_reasons: list[str | None]) -> dict[str, object]:
        """What a rule (each clip's drop reason, None to keep) keeps and drops, by group."""
        kept, why = Counter(), defaultdict(Counter)  # type: ignore[var-annotated]
        for (group, _), reason in zip(groups, rule_reasons):
            kept[group] += reason is None
            if reason:
                why[group][reason.split(" (")[0]] += 1
        return {
            "non_english_kept": sum(kept[g] for g in non_english),
            "non_english_kept_by_language": {g: f"{kept[g]}/{totals[g]}" for g in non_english if kept[g]},
            "english_dropped": totals["en"] - kept["en"],
            "english_noisy_dropped": totals["en_noisy"] - kept["en_noisy"],
            "drop_reasons": {g: dict(r) for g, r in sorted(why.items())},
        }

    for rule, rule_reasons in reasons.items():
        results[rule] = tally(rule_reasons)
    confusion: dict[str, Counter[str]] = defaultdict(Counter)
    for (group, _), lang in zip(groups, detected):
        confusion[group][lang] += 1
    p_en: dict[str, list[float]] = defaultdict(list)
    for (group, _), p in zip(groups, probabilities):
        p_en[group if group in ("en", "en_noisy") else "non_english"].append(p.get("en", 0.0))
    results["language_id"] = {
        "accuracy": round(sum(lang == true for (_, true), lang in zip(groups, detected)) / len(groups), 3),
        "accuracy_by_group": {g: round(confusion[g][true] / totals[g], 3)
                              for g, true in dict(groups).items()},
        "detected": {g: dict(c.most_common()) for g, c in confusion.items()},
        "english_prob_quantiles_0_10_50_90_100": {
            g: [round(float(np.quantile(v, q)), 3) for q in (0, 0.1, 0.5, 0.9, 1)] for g, v in p_en.items()},
    }
    results["max_no_speech_on_speech"] = round(max(ns for _, ns in scores), 3)
    # The default rule at other ASR-confidence thresholds (language.min_avg_logprob; -0.8 is the
    # config's): how far the ASR model's confidence separates foreign speech that passes the language
    # ID's veto from noisy English, whatever the threshold.
    sweep = {threshold: tally([english_filter(t, min_avg_logprob=threshold) for t in with_id])
             for threshold in SWEEP_MIN_AVG_LOGPROB}
    results["min_avg_logprob_sweep"] = {
        str(threshold): {k: counts[k] for k in ("non_english_kept", "english_dropped", "english_noisy_dropped")}
        for threshold, counts in sweep.items()}
    if scores_30s is not None:
        kinds, kinds_30s = ([None if d is None else d.kind for d in map(english_decision, ts)]
                            for ts in (with_id, with_id_30s))
        changed = [i for i, (k, k30) in enumerate(zip(kinds, kinds_30s)) if k != k30]
        results["window_vs_30s"] = {  # the stage's windows (kebr.langid.encoder_frames) against 30 s, both models
            "keep_or_drop_changed": sum((kinds[i] is None) != (kinds_30s[i] is None) for i in changed),
            "kinds_changed": [f"{groups[i][0]}#{i}: {kinds_30s[i]} -> {kinds[i]}" for i in changed],
            "top_language_changed": sum(max(p, key=p.__getitem__) != max(q, key=q.__getitem__)
                                        for (p, _), (q, _) in zip(scores, scores_30s)),
            "max_abs_english_prob_change": round(max(abs(p.get("en", 0.0) - q.get("en", 0.0))
                                                     for (p, _), (q, _) in zip(scores, scores_30s)), 3),
            "max_abs_no_speech_change": round(max(abs(a - b) for (_, a), (_, b) in zip(scores, scores_30s)), 3),
            "asr_transcript_changed": sum(a.text != b.text for a, b in zip(transcripts, transcripts_30s)),
            "asr_max_abs_avg_logprob_change": round(max(abs(a.avg_logprob - b.avg_logprob)
                                                        for a, b in zip(transcripts, transcripts_30s)), 3),
            "asr_max_abs_no_speech_change": round(max(abs(a.no_speech_prob - b.no_speech_prob)
                                                      for a, b in zip(transcripts, transcripts_30s)), 3),
        }
    results["seconds"] = seconds
    print(json.dumps(results, indent=2, ensure_ascii=False))
    if not args.from_rows:
        RESULTS.mkdir(parents=True, exist_ok=True)
        name = "langid.json" if args.asr_model == "bundled" else f"langid-{args.asr_model}.json"
        (RESULTS / name).write_text(json.dumps({
            "bench": "langid", "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", **results}, ensure_ascii=False) + "\n")


def top_languages(probabilities: dict[str, float], n: int = 5) -> dict[str, float]:
    return dict(sorted(probabilities.items(), key=lambda item: -item[1])[:n])


def with_language(transcripts: list[Transcript], scores: list[tuple[dict[str, float], float]],
                  id_model: str) -> list[Transcript]:
    """The transcripts as the stage records them with the language ID's scores (language, its
    probability, P(English), the language model's no-speech probability)."""
    out = []
    for t, (p, no_speech) in zip(transcripts, scores):
        language = max(p, key=p.__getitem__)
        out.append(dataclasses.replace(t, language=language, language_prob=p[language], english_prob=p.get("en", 0.0),
                                       language_model=id_model, language_no_speech_prob=no_speech))
    return out


if __name__ == "__main__":
    main()
