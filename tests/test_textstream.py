"""Token-to-text streaming: UTF-8 across tokens, stop strings, reasoning split (no model needed)."""

import pytest
from transformers import AutoTokenizer

from engine.textstream import IncrementalDetokenizer, ReasoningSplitter, StopMatcher, prompt_opens_reasoning

SAMPLES = ["Emoji: 🙂 🚀 🎉 👍🏽 done", "東京は日本の首都です。", "Café naïve Zürich", "plain ascii text, with spaces"]


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    return AutoTokenizer.from_pretrained(tokenizer_dir)


@pytest.mark.parametrize("text", SAMPLES)
def test_streamed_pieces_join_to_the_text_without_broken_characters(tokenizer, text):
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    detok = IncrementalDetokenizer(tokenizer)
    pieces = [detok.add(i) for i in ids] + [detok.flush()]
    assert "".join(pieces) == text
    assert not any("\ufffd" in p for p in pieces)


def test_a_character_split_over_tokens_is_held_until_complete(tokenizer):
    ids = tokenizer("🙂", add_special_tokens=False)["input_ids"]
    assert len(ids) > 1, "the fixture tokenizer must split this emoji into byte tokens"
    detok = IncrementalDetokenizer(tokenizer)
    pieces = [detok.add(i) for i in ids]
    assert pieces[:-1] == [""] * (len(ids) - 1) and pieces[-1] == "🙂"


def test_special_tokens_are_not_emitted(tokenizer):
    detok = IncrementalDetokenizer(tokenizer)
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert detok.add(eos) == ""


@pytest.mark.parametrize("chunks, stops, expected, stopped", [
    (["Hello wor", "ld and more"], ["world"], "Hello ", True),
    (["Hello w", "o", "rld"], ["world"], "Hello ", True),
    (["Hello wo", "nderful"], ["world"], "Hello wonderful", False),
    (["abc"], ["c", "b"], "a", True),
    (["no stops here"], [], "no stops here", False),
])
def test_stop_matcher(chunks, stops, expected, stopped):
    matcher = StopMatcher(stops)
    out = "".join(matcher.push(c) for c in chunks) + matcher.flush()
    assert out == expected and matcher.stopped is stopped


def test_stop_matcher_holds_back_a_possible_stop_prefix():
    matcher = StopMatcher(["</end>"])
    assert matcher.push("text </e") == "text "
    assert matcher.push("xtra") == "</extra"


def split_all(chunks, starts_in_reasoning=False):
    splitter = ReasoningSplitter(starts_in_reasoning)
    reasoning, content = "", ""
    for chunk in chunks:
        r, c = splitter.push(chunk)
        reasoning, content = reasoning + r, content + c
    r, c = splitter.flush()
    return reasoning + r, content + c


@pytest.mark.parametrize("chunks", [
    ["<think>Let me see.</think>\n\nThe answer is 42."],
    ["<th", "ink>Let me", " see.</th", "ink>", "\n\nThe answer", " is 42."],
    ["\n<think>", "Let me see.", "<", "/", "think>", "The answer is 42."],
])
def test_reasoning_split_across_any_chunking(chunks):
    assert split_all(chunks) == ("Let me see.", "The answer is 42.")


def test_reasoning_when_the_prompt_opened_the_block():
    assert split_all(["Let me see.</think>The answer."], starts_in_reasoning=True) == ("Let me see.", "The answer.")


def test_no_think_tag_means_all_content_unchanged():
    assert split_all(["  Hello", " <think> is just text here"]) == ("", "  Hello <think> is just text here")


def test_unfinished_reasoning_stays_reasoning():
    assert split_all(["<think>still thinking"]) == ("still thinking", "")


def test_prompt_opens_reasoning():
    assert prompt_opens_reasoning("<|im_start|>assistant\n<think>\n")
    assert not prompt_opens_reasoning("<|im_start|>assistant\n")
