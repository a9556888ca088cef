"""Logits processors for sampling, numerically safe for every value the request schema admits (imports torch).

Sequential mode hands them to ``model.generate``; dynamic batching applies them per row. Both
take the same steps, so a request samples alike in either mode.
"""

from __future__ import annotations

from typing import Optional

import torch
from transformers import LogitsProcessor
from transformers.generation.logits_process import (
    RepetitionPenaltyLogitsProcessor,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from engine.requests import TokenLogprob


class OpenAIPenalties(LogitsProcessor):
    """OpenAI's additive penalties: ``logit -= frequency * count + presence * (count > 0)``,
    counted over the generated tokens only."""

    def __init__(self, prompt_length: int, frequency: float, presence: float):
        self.prompt_length = prompt_length
        self.frequency = frequency
        self.presence = presence

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        generated = input_ids[:, self.prompt_length :]
        if generated.numel() == 0:
            return scores
        counts = torch.zeros_like(scores).scatter_add_(
            1, generated, torch.ones_like(generated, dtype=scores.dtype)
        )
        return scores - self.frequency * counts - self.presence * (counts > 0).to(scores.dtype)


class FiniteScores(LogitsProcessor):
    """NaN becomes -inf and +inf the largest finite score: a penalty that overflowed (a
    repetition_penalty of 1e-38 divides a logit by it) leaves a distribution sampling can take."""

    def __call__(self, input_ids, scores: torch.FloatTensor) -> torch.FloatTensor:
        return torch.nan_to_num(scores, nan=float("-inf"), posinf=torch.finfo(scores.dtype).max, neginf=float("-inf"))


class StableTemperature(LogitsProcessor):
    """``(scores - max) / T``: the same distribution as ``scores / T``, but every score stays at
    most 0 and the best at exactly 0, so a temperature of 1e-300 gives the arg-max instead of
    inf - inf = NaN (transformers' warper divides first)."""

    def __init__(self, temperature: float):
        self.temperature = temperature

    def __call__(self, input_ids, scores: torch.FloatTensor) -> torch.FloatTensor:
        shifted = scores - scores.max(dim=-1, keepdim=True).values
        # In float32 a temperature below ~1e-38 is 0 (then 0 / 0 is NaN for the best token): the
        # smallest normal number gives the same distribution, the arg-max.
        temperature = max(self.temperature, torch.finfo(scores.dtype).tiny)
        return torch.nan_to_num(shifted / temperature, nan=float("-inf"), neginf=float("-inf"))


class LogitBias(LogitsProcessor):
    """OpenAI's ``logit_bias``: a fixed amount added to the logits of the tokens named."""

    def __init__(self, bias: tuple[tuple[int, float], ...], width: int):
        self.ids = [token for token, _ in bias if token < width]
        self.amounts = [amount for token, amount in bias if token < width]
        self._added: Optional[torch.Tensor] = None

    def __call__(self, input_ids, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self._added is None or self._added.device != scores.device:
            self._added = torch.zeros(scores.shape[-1], dtype=scores.dtype, device=scores.device)
            self._added[self.ids] = torch.tensor(self.amounts, dtype=scores.dtype, device=scores.device)
        return scores + self._added


def token_logprob(logits: torch.Tensor, token_id: int, top: int) -> TokenLogprob:
    """``token_id``'s log-probability under ``logits`` (one row, the model's raw scores, before
    any penalty, bias, mask or temperature: what OpenAI and vLLM report) and the ``top`` likeliest."""
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    alternatives: list[tuple[int, float]] = []
    if top:
        values, ids = logprobs.topk(top)
        alternatives = list(zip(ids.tolist(), values.tolist()))
    return TokenLogprob(token_id, float(logprobs[token_id]), alternatives)


def prompt_logprobs(model, prompt_ids: list[int], top: int) -> list[Optional[TokenLogprob]]:
    """Each prompt token's log-probability given the tokens before it (``echo`` with
    ``logprobs``; what evaluation harnesses call loglikelihood): one forward pass over the
    prompt, its own, so the batch's prefill keeps computing only the last position's logits."""
    with torch.inference_mode():
        ids = torch.tensor([prompt_ids], device=model.device)
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False).logits[0]
        entries: list[Optional[TokenLogprob]] = [None]
        for position in range(1, len(prompt_ids)):
            entries.append(token_logprob(logits[position - 1], prompt_ids[position], top))
    return entries


def sampling_processors(params, prompt_length: int, grammar: Optional[LogitsProcessor] = None,
                        width: int = 0) -> list[LogitsProcessor]:
    """Logit bias, penalties, the grammar's mask, then (when sampling) temperature, top-k and
    top-p, numerically safe for every value the request schema admits; the same steps in
    sequential and dynamic mode. ``width``: the scores per step (for ``logit_bias``)."""
    processors: list[LogitsProcessor] = []
    if params.logit_bias:
        processors.append(LogitBias(params.logit_bias, width))
    if params.repetition_penalty != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(params.repetition_penalty))
    if params.frequency_penalty or params.presence_penalty:
        processors.append(OpenAIPenalties(prompt_length, params.frequency_penalty, params.presence_penalty))
    if processors:
        processors.append(FiniteScores())
    if grammar is not None:  # after the penalties: no penalty may lift a token the grammar forbids
        processors.append(grammar)
    if not params.greedy:
        if params.temperature != 1.0:
            processors.append(StableTemperature(params.temperature))
        if params.top_k > 0:
            processors.append(TopKLogitsWarper(params.top_k))
        if params.top_p < 1.0:
            processors.append(TopPLogitsWarper(params.top_p))
    return processors
