"""Dynamic batching: requests that arrive close together are decoded together (imports torch).

Each batch is prefilled at once (prompts left-padded) and then decoded one step at a time for
all its rows; every row streams its own tokens, and a row that finishes (end of text, stop
string, max tokens, client gone, deadline) leaves the batch at once: its KV rows are dropped
from the cache, so the remaining rows stop paying for it. New requests join at the next batch,
not mid-batch. A request that arrives while the engine is idle starts at once; the engine waits
up to ``max_wait_ms`` for company only when the previous batch had some.
"""

from __future__ import annotations

import time
from typing import Optional

import torch
from transformers import DynamicCache
from transformers.generation.logits_process import (
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from engine.requests import GenerationRequest
from engine.runtime.generator import OpenAIPenalties, QueuedGenerator, _RequestRun


class _Row:
    """One request's place in the batch: its tokens, its sampler and its stream."""

    def __init__(self, run: _RequestRun, device: torch.device):
        self.run = run
        request = run.request
        p = request.params
        self.tokens = list(request.prompt_ids)
        self.processors = []
        if p.repetition_penalty != 1.0:
            self.processors.append(RepetitionPenaltyLogitsProcessor(p.repetition_penalty))
        if p.frequency_penalty or p.presence_penalty:
            self.processors.append(OpenAIPenalties(len(request.prompt_ids), p.frequency_penalty, p.presence_penalty))
        if not p.greedy:
            self.processors.append(TemperatureLogitsWarper(p.temperature))
            if p.top_k > 0:
                self.processors.append(TopKLogitsWarper(p.top_k))
            if p.top_p < 1.0:
                self.processors.append(TopPLogitsWarper(p.top_p))
        self.generator: Optional[torch.Generator] = None
        if not p.greedy:
            self.generator = torch.Generator(device=device)
            self.generator.manual_seed(p.seed if p.seed is not None else int(torch.seed() % 2**63))

    def next_token(self, logits: torch.Tensor) -> int:
        scores = logits.unsqueeze(0).float()
        if self.processors:
            ids = torch.tensor([self.tokens], device=logits.device)
            for processor in self.processors:
                scores = processor(ids, scores)
        if self.generator is None:
            return int(scores.argmax(dim=-1))
        probs = torch.softmax(scores, dim=-1)
        return int(torch.multinomial(probs, 1, generator=self.generator))


class DynamicBatcher(QueuedGenerator):
    mode = "dynamic"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._last_batch_size = 1

    def _next_batch(self) -> list[GenerationRequest]:
        first = self._take()
        if first is None:
            return []
        batch = [first]
        limit = self.batching.max_batch_size
        while len(batch) < limit:  # whatever is already waiting joins
            request = self._take(block=False)
            if request is None:
                break
            batch.append(request)
        if len(batch) == 1 and self._last_batch_size == 1:
            return batch  # alone and no sign of company: no waiting
        deadline = time.monotonic() + self.batching.max_wait_ms / 1000
        while len(batch) < limit:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            request = self._take(timeout=remaining)
            if request is None:
                break
            batch.append(request)
        self._last_batch_size = len(batch)
        return batch

    def _serve(self, requests: list[GenerationRequest]) -> None:
        self._last_batch_size = max(self._last_batch_size, len(requests))
        device = self.loaded.device
        model = self.loaded.model
        rows = []
        for request in requests:
            self.metrics.queue_time.observe(time.monotonic() - request.arrival)
            self.metrics.prompt_tokens.inc(len(request.prompt_ids))
            rows.append(_Row(_RequestRun(self.loaded, request, self.metrics), device))
        longest = max(len(r.tokens) for r in rows)
        pad = self.loaded.tokenizer.pad_token_id or 0
        input_ids = torch.tensor([[pad] * (longest - len(r.tokens)) + r.tokens for r in rows], device=device)
        mask = torch.tensor([[0] * (longest - len(r.tokens)) + [1] * len(r.tokens) for r in rows], device=device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache(config=model.config)
        with torch.inference_mode():
            logits = model(input_ids=input_ids, attention_mask=mask, position_ids=positions,
                           past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1, :]
            while rows:
                step = []
                for row, row_logits in zip(rows, logits):
                    token = row.next_token(row_logits)
                    row.tokens.append(token)
                    row.run._on_token(token)
                    step.append(token)
                keep = [i for i, row in enumerate(rows) if not row.run.poll()]
                for i, row in enumerate(rows):
                    if i not in keep:
                        row.run.finish()
                if not keep:
                    return
                if len(keep) < len(rows):  # finished rows leave: drop their KV and their place
                    index = torch.tensor(keep, device=device)
                    cache.batch_select_indices(index)
                    mask, positions = mask[index], positions[index]
                    rows = [rows[i] for i in keep]
                    step = [step[i] for i in keep]
                mask = torch.cat([mask, mask.new_ones((len(rows), 1))], dim=-1)
                positions = positions[:, -1:] + 1
                logits = model(input_ids=torch.tensor([step], device=device).T, attention_mask=mask,
                               position_ids=positions, past_key_values=cache, use_cache=True).logits[:, -1, :]
