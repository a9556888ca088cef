"""Prompts into token ids, and how many tokens a request may generate (torch-free).

Every refusal is a ``PromptError`` whose message tells the client what to change; the server
answers it with a 400.
"""

from __future__ import annotations

from typing import Optional

from engine.scheduling import ServedModel
from engine.textstream import prompt_opens_reasoning


class PromptError(ValueError):
    """The prompt cannot be served as asked (too long, no chat template); a 400 for clients."""


def _tokenize(tokenizer, text: str, add_special_tokens: bool) -> list[int]:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:  # JSON may carry lone surrogates (\ud800) that no tokenizer takes
        raise PromptError(f"the prompt is not valid Unicode text: {exc.reason} at position {exc.start}") from None
    ids = list(tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])
    if not ids:
        raise PromptError("the prompt is empty: send at least one token of text")
    return ids


def encode_chat(model: ServedModel, messages: list[dict], tools: Optional[list[dict]] = None) -> tuple[list[int], bool]:
    """Render ``messages`` (and ``tools``: OpenAI tool objects, for templates that render them)
    with the model's chat template and tokenize.

    Returns:
        the prompt's token ids, and whether the prompt leaves a ``<think>`` block open.
    Raises:
        PromptError: the model has no chat template, or the template refuses the messages.
    """
    if not model.has_chat_template:
        raise PromptError(
            f"model {model.name!r} has no chat template, so it cannot take chat messages; "
            "use /v1/completions with a plain prompt, or add a chat template to its tokenizer_config.json"
        )
    try:
        text = model.tokenizer.apply_chat_template(messages, tools=tools or None, add_generation_prompt=True,
                                                   tokenize=False)
    except Exception as exc:  # jinja raises TemplateError and plain exceptions via raise_exception
        raise PromptError(f"the model's chat template refused these messages: {exc}") from None
    ids = _tokenize(model.tokenizer, text, add_special_tokens=False)
    return ids, prompt_opens_reasoning(text)


def encode_text(model: ServedModel, prompt: str) -> list[int]:
    """Tokenize a plain prompt (with the tokenizer's own special tokens, e.g. BOS).

    Raises:
        PromptError: the text is not valid Unicode or holds no token.
    """
    return _tokenize(model.tokenizer, prompt, add_special_tokens=True)


def plan_max_tokens(context: int, prompt_tokens: int, requested: Optional[int]) -> int:
    """How many tokens to generate: ``requested``, or what the ``context`` length leaves.

    Raises:
        PromptError: the prompt plus ``requested`` does not fit in the context.
    """
    if requested is None:
        if prompt_tokens >= context:
            raise PromptError(
                f"the prompt has {prompt_tokens} tokens, which leaves no room to answer in the "
                f"model's context length of {context} tokens; shorten the prompt"
            )
        return context - prompt_tokens
    if prompt_tokens + requested > context:
        raise PromptError(
            f"the prompt has {prompt_tokens} tokens and max_tokens is {requested}: together "
            f"{prompt_tokens + requested}, more than the model's context length of {context} "
            "tokens; shorten the prompt or lower max_tokens"
        )
    return requested
