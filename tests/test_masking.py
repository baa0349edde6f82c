"""Sentiment-word masking with the real bundled tokenizer and the real VADER lexicon."""

from __future__ import annotations

import pytest

from kebr.clips import ClipError
from kebr.masking import (
    SentimentMasker,
    bundled_text_model_path,
    lexicon_label,
    load_tokenizer,
    load_vader_lexicon,
)


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("bundled")


@pytest.fixture(scope="module")
def lexicon():
    return load_vader_lexicon()


@pytest.fixture(scope="module")
def masker(tokenizer, lexicon):
    return SentimentMasker(tokenizer, lexicon)


def pieces(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_bundled_model_dir_has_a_bert_vocab():
    assert (bundled_text_model_path() / "vocab.txt").is_file()


def test_lexicon_values_match_the_shipped_file(lexicon):
    # Lines of vader_lexicon.txt: "good\t1.9\t...", "horrible\t-2.5\t...", ":)\t2.0\t...".
    assert len(lexicon) > 7000
    assert lexicon["good"] == 1.9 and lexicon["horrible"] == -2.5 and lexicon[":)"] == 2.0
    assert lexicon["lol"] == 1.8  # "lol" is listed twice (2.9, then 1.8): the later wins, as in VADER
    assert lexicon_label(lexicon["good"]) == 1.425
    assert lexicon_label(lexicon["horrible"]) == -1.875
    assert lexicon_label(4.0) == 3.0 and lexicon_label(-4.0) == -3.0


def test_lexicon_from_a_custom_crlf_file(tmp_path):
    path = tmp_path / "lex.txt"
    path.write_bytes(b"meh\t-0.7\t0.5\t[0, -1]\r\n:-(\t-1.5\t0.9\t[-1, -2]\r\n")
    assert load_vader_lexicon(path) == {"meh": -0.7, ":-(": -1.5}


def test_label_and_span_of_the_strongest_word(masker, tokenizer):
    text = "The food was good but the service was horrible."
    r = masker(text, "clip1")
    assert (r.word, r.word_index, r.score, r.label) == ("horrible", 8, -2.5, -1.875)
    assert text[r.char_start : r.char_end] == "horrible"
    assert not r.no_sentiment_word
    assert r.masked_text == "The food was good but the service was [MASK]."
    expected = pieces(tokenizer, "The food was good but the service was") + [103] + pieces(tokenizer, ".")
    assert r.input_ids == [101] + expected + [102]
    assert r.input_ids[r.mask_index] == tokenizer.mask_token_id == 103


def test_word_split_into_pieces_becomes_one_mask(masker, tokenizer):
    text = "what a heartbreaking ending"
    assert len(tokenizer.tokenize("heartbreaking")) >= 2  # WordPiece really splits it
    r = masker(text, "c")
    assert (r.word, r.score) == ("heartbreaking", -2.0)
    assert r.input_ids == (
        [101] + pieces(tokenizer, "what a") + [103] + pieces(tokenizer, "ending") + [102]
    )
    assert r.input_ids.count(103) == 1 and r.mask_index == 3
    assert len(r.input_ids) == len(pieces(tokenizer, text)) + 2 - 1  # two pieces -> one mask


def test_ties_go_to_the_first_occurrence(masker):
    r = masker("good day, good night", "c")
    assert (r.word_index, r.char_start, r.char_end) == (0, 0, 4)
    # |-2.0| == |2.0|: the earlier word wins even though the sign differs.
    r = masker("a heartbreaking story :) really", "c")
    assert (r.word, r.score) == ("heartbreaking", -2.0)
    r = masker("a story :) so heartbreaking", "c")
    assert (r.word, r.score, r.word_index) == (":)", 2.0, 2)


def test_emoticon_is_found_intact(masker, tokenizer):
    text = "we went home :)"
    r = masker(text, "c")
    assert (r.word, r.score, r.label, r.char_start, r.char_end) == (":)", 2.0, 1.5, 13, 15)
    # ":)" is two WordPiece tokens; both become the single mask.
    assert tokenizer.tokenize(":)") == [":", ")"]
    assert r.input_ids == [101] + pieces(tokenizer, "we went home") + [103, 102]


def test_case_punctuation_and_clitics(masker):
    text = "Honestly, (HORRIBLE)!"
    r = masker(text, "c")
    assert (r.word, r.score) == ("HORRIBLE", -2.5)
    assert text[r.char_start : r.char_end] == "HORRIBLE" and r.masked_text == "Honestly, ([MASK])!"
    r = masker("it is my friend\u2019s car", "c")
    assert (r.word, r.score, r.word_index) == ("friend", 2.2, 3)
    assert r.masked_text == "it is my [MASK]\u2019s car"
    r = masker("No.", "c")  # a lexicon word with a trailing full stop
    assert (r.word, r.score) == ("No", -1.2)


def test_no_lexicon_word_is_reproducible(tokenizer, lexicon):
    text = "we drove to the station on tuesday and then walked back to the house"
    words = text.split()
    assert not any(w in lexicon for w in words)
    masker = SentimentMasker(tokenizer, lexicon, seed=0)
    first = masker(text, "spk__vid__00001")
    assert first == masker(text, "spk__vid__00001")
    assert first == SentimentMasker(tokenizer, lexicon, seed=0)(text, "spk__vid__00001")
    assert first.no_sentiment_word and first.label == 0.0 and first.score == 0.0
    assert first.word == words[first.word_index] == text[first.char_start : first.char_end]
    assert first.input_ids[first.mask_index] == 103 and first.input_ids.count(103) == 1
    chosen = [masker(text, f"clip{i}").word_index for i in range(20)]
    assert len(set(chosen)) > 3  # different clips mask different words
    reseeded = SentimentMasker(tokenizer, lexicon, seed=7)
    assert chosen != [reseeded(text, f"clip{i}").word_index for i in range(20)]


def test_random_choice_skips_punctuation_only_words(masker):
    r = masker("station - tuesday", "c")
    assert r.word in ("station", "tuesday") and r.no_sentiment_word


def test_long_text_keeps_a_window_around_the_mask(masker, tokenizer, lexicon):
    assert "table" not in lexicon
    text = " ".join(["table"] * 60 + ["horrible"] + ["table"] * 30)
    r = masker(text, "c")
    assert r.word_index == 60 and r.word == "horrible"
    # One token per "table": the mask is text token 60; keep 20 before, the mask, 16 after.
    assert len(r.input_ids) == 39 and r.mask_index == 21
    table = pieces(tokenizer, "table")
    assert len(table) == 1
    assert r.input_ids == [101] + table * 20 + [103] + table * 16 + [102]

    near_end = " ".join(["table"] * 60 + ["horrible"] + ["table"] * 5)
    r = masker(near_end, "c")
    assert r.input_ids == [101] + table * 20 + [103] + table * 5 + [102] and r.mask_index == 21

    near_start = " ".join(["table"] * 10 + ["horrible"] + ["table"] * 80)
    r = masker(near_start, "c")  # the mask lies within the first 37 tokens: plain truncation
    assert r.input_ids == [101] + table * 10 + [103] + table * 26 + [102] and r.mask_index == 11

    last_fitting = " ".join(["table"] * 36 + ["horrible"] + ["table"] * 10)
    r = masker(last_fitting, "c")
    assert len(r.input_ids) == 39 and r.mask_index == 37 and r.input_ids[37] == 103


def test_window_never_exceeds_max_length(tokenizer, lexicon):
    masker = SentimentMasker(tokenizer, lexicon, max_length=12, window_before=4, window_after=30)
    for before in range(0, 40, 3):
        text = " ".join(["table"] * before + ["horrible"] + ["table"] * 40)
        r = masker(text, "c")
        assert len(r.input_ids) == 12 and r.input_ids[r.mask_index] == 103
    with pytest.raises(ValueError):
        SentimentMasker(tokenizer, lexicon, max_length=12, window_before=10)


@pytest.mark.parametrize("text", ["", "   \n\t "])
def test_empty_transcript_is_a_clip_error(masker, text):
    with pytest.raises(ClipError, match="masking: empty transcript"):
        masker(text, "c")


def test_punctuation_only_transcript_is_a_clip_error(masker):
    with pytest.raises(ClipError, match="masking: no word in transcript"):
        masker("... ?", "c")
