"""Sequential mode: one request at a time through ``model.generate`` (imports torch).

``model.generate`` keeps greedy output exactly transformers' own; the request's ``RequestRun``
is its streamer and stopping criterion, so it ends as soon as its client is gone, its deadline
passes or a stop string appears.
"""

from __future__ import annotations

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

from engine.requests import GenerationRequest
from engine.runtime.faults import inject_model_faults
from engine.runtime.kv_cache import cache_argument, kv_layers
from engine.runtime.queued_generator import QueuedGenerator
from engine.runtime.sampling import sampling_processors


class RecordLogprobs(LogitsProcessor):
    """Keeps each step's raw scores for the request's log-probabilities; the streamer pairs them
    with the token generate picks from them."""

    def __init__(self, run):
        self.run = run

    def __call__(self, input_ids, scores: torch.FloatTensor) -> torch.FloatTensor:
        self.run.recorded.append(scores[0].clone())
        return scores


class SequentialGenerator(QueuedGenerator):
    """One request at a time through ``model.generate``: the baseline. Several choices of one
    request (``n``) run one after another, each prefilling the prompt (or taking it from the
    prefix cache)."""

    mode = "sequential"

    def _next_batch(self) -> list[GenerationRequest]:
        request = self._take()
        return [request] if request else []

    def _serve(self, requests: list[GenerationRequest]) -> None:
        for request in requests:
            self._run(request)

    def _generation_config(self, request: GenerationRequest) -> GenerationConfig:
        p = request.params
        config = GenerationConfig(
            max_new_tokens=p.max_new_tokens,
            do_sample=not p.greedy,
            num_beams=1,
            # An empty list, not None: None would fall back to the model's own eos tokens.
            eos_token_id=[] if p.ignore_eos else list(self.loaded.eos_token_ids),
            pad_token_id=self.loaded.tokenizer.pad_token_id
            if self.loaded.tokenizer.pad_token_id is not None
            else (self.loaded.eos_token_ids or (0,))[0],
            # Penalties, temperature, top-k and top-p come as ``sampling_processors`` (numerically
            # safe); generate's own would divide by a temperature of 1e-300 and sample NaN.
            temperature=1.0, top_k=None, top_p=1.0,
        )
        return config

    def _run(self, request: GenerationRequest) -> None:
        run = self.start_run(request)
        p = request.params
        processors = LogitsProcessorList(sampling_processors(p, len(request.prompt_ids), run.grammar,
                                                             self.loaded.logits_width))
        if run.wants_logprobs:  # first: it sees the model's raw scores
            processors.insert(0, RecordLogprobs(run))
        inject_model_faults([request])
        if p.seed is not None:
            torch.manual_seed(p.seed)
        input_ids = torch.tensor([request.prompt_ids], dtype=torch.long, device=self.loaded.device)
        cache = self.live_cache = self.cache_with_prefix(request.prompt_ids)
        try:
            with torch.inference_mode():
                out = self.loaded.model.generate(
                    input_ids,
                    attention_mask=torch.ones_like(input_ids),
                    generation_config=self._generation_config(request),
                    logits_processor=processors,
                    stopping_criteria=[run],
                    streamer=run,
                    **{cache_argument(self.loaded.model): cache},
                    return_dict_in_generate=True,
                )
        finally:
            self.live_cache = None
        run.finish()
        if self.prefix_cache is not None and out.past_key_values is not None:
            self.prefix_cache.store(request.prompt_ids, kv_layers(out.past_key_values))
