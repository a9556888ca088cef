"""Dynamic batching: requests that arrive close together are decoded together (imports torch).

Each batch is prefilled at once (prompts left-padded) and then decoded one step at a time for
all its rows; every row streams its own tokens, and a row that finishes (end of text, stop
string, max tokens, client gone, deadline) leaves the batch at once: its KV rows are dropped
from the cache, so the remaining rows stop paying for it. A request that arrives while a batch
runs joins it at the next step (prefilled on its own, then stacked under the running rows), up
to ``max_batch_size``. A request that arrives while the engine is idle starts at once; the
engine waits up to ``max_wait_ms`` for company only when the previous batch had some.
"""

from __future__ import annotations

import logging
import time
from typing import Optional

import torch
from transformers import DynamicCache

from engine.faults import FAULTS
from engine.requests import GenerationRequest, TokenLogprob
from engine.runtime.faults import inject_model_faults
from engine.runtime.kv_cache import cache_argument, growing_cache, kv_layers
from engine.runtime.queued_generator import QueuedGenerator
from engine.runtime.request_run import RequestRun
from engine.runtime.sampling import sampling_processors, token_logprob

log = logging.getLogger("engine.batcher")


class _Row:
    """One request's place in the batch: its tokens, its sampler and its stream."""

    def __init__(self, run: RequestRun, device: torch.device, width: int):
        self.run = run
        request = run.request
        p = request.params
        self.tokens = list(request.prompt_ids)
        self.processors = sampling_processors(p, len(request.prompt_ids), run.grammar, width)
        self.reads_history = p.repetition_penalty != 1.0 or bool(p.frequency_penalty or p.presence_penalty)
        self.top_logprobs = p.logprobs  # None: the request wants no log-probabilities
        self.plain_greedy = p.greedy and not self.processors and self.top_logprobs is None
        self.generator: Optional[torch.Generator] = None
        if not p.greedy:
            self.generator = torch.Generator(device=device)
            self.generator.manual_seed(p.seed if p.seed is not None else int(torch.seed() % 2**63))

    def next_token(self, logits: torch.Tensor) -> tuple[int, Optional[TokenLogprob]]:
        """The next token from this row's raw ``logits``, and its log-probability if asked."""
        scores = logits.unsqueeze(0).float()
        if self.processors:
            # Only the penalties read the history; the warpers ignore it, so no copy per step.
            ids = torch.tensor([self.tokens], device=logits.device) if self.reads_history else None
            for processor in self.processors:
                scores = processor(ids, scores)
        if self.generator is None:
            token = int(scores.argmax(dim=-1))
        else:
            probs = torch.softmax(scores, dim=-1)
            if not torch.isfinite(probs).all():  # every score -inf: the model's own logits were NaN
                raise FloatingPointError("the model produced no finite scores for this request")
            token = int(torch.multinomial(probs, 1, generator=self.generator))
        if self.top_logprobs is None:
            return token, None
        return token, token_logprob(logits, token, self.top_logprobs)


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
        limit = self.batch_limit.current()
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
        batch = _Batch(self)
        try:
            self._decode(batch, requests)
        finally:
            self.live_cache = None

    def _decode(self, batch: "_Batch", requests: list[GenerationRequest]) -> None:
        with torch.inference_mode():
            batch.admit(self._rows(requests))
            while batch.rows:
                batch.sample_and_emit()
                if not batch.rows:
                    return
                batch.forward()
                room = self.batch_limit.current() - len(batch.rows)
                newcomers = []
                while len(newcomers) < room:  # join at the next step, not the next batch
                    request = self._take(block=False)
                    if request is None:
                        break
                    newcomers.append(request)
                if newcomers:
                    self.metrics.batch_size.observe(len(batch.rows) + len(newcomers))
                    self.metrics.batch_joins.inc(len(newcomers))
                    self._admit_newcomers(batch, newcomers)

    def _admit_newcomers(self, batch: "_Batch", requests: list[GenerationRequest]) -> None:
        """Prefill late arrivals beside the running rows; a failure there fails the newcomers
        alone (their prefill is separate, the running rows' KV is untouched until it succeeds).
        Out of memory is the batch's: it goes up to the loop, which lowers the batch limit."""
        rows = self._rows(requests)
        try:
            batch.admit(rows)
        except torch.cuda.OutOfMemoryError:
            raise
        except Exception as exc:
            log.exception("prefill of requests joining a batch failed",
                          extra={"request_ids": [r.request_id for r in requests]})
            for row in rows:
                if row not in batch.rows:
                    row.run.fail(f"generation failed: {type(exc).__name__}: {exc}")

    def _rows(self, requests: list[GenerationRequest]) -> list[_Row]:
        width = self.loaded.logits_width
        return [_Row(self.start_run(request), self.loaded.device, width) for request in requests]


def _left_pad(tensor: torch.Tensor, length: int, dim: int) -> torch.Tensor:
    missing = length - tensor.shape[dim]
    if missing <= 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


class _Batch:
    """The rows decoding together, their KV cache, attention mask and next positions.

    All rows share one cache length; shorter rows are left-padded with masked zeros, so a row
    that joins late (prefilled on its own) and the rows already running can be stacked.
    """

    def __init__(self, generator: "DynamicBatcher"):
        self.generator = generator
        loaded = generator.loaded
        self.loaded = loaded
        self.device = loaded.device
        self.rows: list[_Row] = []
        self.cache: Optional[DynamicCache] = None
        self.mask: Optional[torch.Tensor] = None       # [rows, cache length]
        self.positions: Optional[torch.Tensor] = None  # [rows, 1]: position of each row's last token
        self.logits: Optional[torch.Tensor] = None     # [rows, vocab]: to sample the next tokens from
        self.step: list[int] = []
        self.cache_arg = cache_argument(loaded.model)

    def admit(self, rows: list[_Row]) -> None:
        """Prefill ``rows`` and stack them under the running ones. Rows whose prompt starts with
        a cached prefix are prefilled from it, one prompt at a time; the others together."""
        fresh = []
        by_prompt: dict[tuple[int, ...], list[_Row]] = {}
        for row in rows:
            by_prompt.setdefault(tuple(row.tokens), []).append(row)
        for same_prompt in by_prompt.values():
            prompt = same_prompt[0].tokens
            cache = self.generator.cache_with_prefix(prompt) if self.generator.prefix_cache else None
            if cache is not None and cache.get_seq_length() > 0:
                self._prefill(same_prompt, cache)
            else:
                fresh.extend(same_prompt)
        if fresh:
            self._prefill(fresh, growing_cache(self.loaded.model.config))

    def _prefill(self, rows: list[_Row], cache: DynamicCache) -> None:
        """Prefill ``rows`` together. Rows with the same prompt (the choices of one request) are
        prefilled once and their KV, mask, positions and logits copied to each."""
        distinct: dict[tuple[int, ...], int] = {}  # prompt -> its place among the distinct ones
        firsts: list[_Row] = []
        for row in rows:
            if distinct.setdefault(tuple(row.tokens), len(distinct)) == len(firsts):
                firsts.append(row)
        if len(firsts) == len(rows):
            self._prefill_distinct(rows, cache)
        else:
            self._prefill_distinct(firsts, cache, [distinct[tuple(row.tokens)] for row in rows], rows)

    def _prefill_distinct(self, rows: list[_Row], cache: DynamicCache, copies: Optional[list[int]] = None,
                          all_rows: Optional[list[_Row]] = None) -> None:
        """``copies``: for each of ``all_rows``, the place of its prompt among ``rows``."""
        model = self.loaded.model
        cached = cache.get_seq_length()
        longest = max(len(r.tokens) for r in rows)
        pad = self.loaded.tokenizer.pad_token_id or 0
        ids = torch.tensor([[pad] * (longest - len(r.tokens)) + r.tokens for r in rows], device=self.device)
        mask = torch.tensor([[0] * (longest - len(r.tokens)) + [1] * len(r.tokens) for r in rows], device=self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        if FAULTS.active:  # off outside tests: build no list of requests then
            inject_model_faults([r.run.request for r in rows])
        logits = model(input_ids=ids[:, cached:], attention_mask=mask, position_ids=positions[:, cached:],
                       use_cache=True, logits_to_keep=1, **{self.cache_arg: cache}).logits[:, -1, :]
        if copies is not None:  # one prefill per distinct prompt, one row per request
            index = torch.tensor(copies, device=self.device, dtype=torch.long)
            cache.batch_select_indices(index)
            mask, positions, logits = mask[index], positions[index], logits[index]
            rows = all_rows
        if self.cache is None:
            self.cache, self.mask, self.positions, self.logits = cache, mask, positions[:, -1:], logits
            self.generator.live_cache = cache
        else:
            self._stack(cache, mask, positions[:, -1:], logits)
        self.rows.extend(rows)

    def _stack(self, cache: DynamicCache, mask, positions, logits) -> None:
        length = max(self.mask.shape[1], mask.shape[1])
        for mine, theirs in zip(self.cache.layers, cache.layers):
            mine.keys = torch.cat([_left_pad(mine.keys, length, 2), _left_pad(theirs.keys, length, 2)])
            mine.values = torch.cat([_left_pad(mine.values, length, 2), _left_pad(theirs.values, length, 2)])
        self.mask = torch.cat([_left_pad(self.mask, length, 1), _left_pad(mask, length, 1)])
        self.positions = torch.cat([self.positions, positions])
        self.logits = torch.cat([self.logits, logits])

    def sample_and_emit(self) -> None:
        """One token per row from the pending logits; finished rows leave. An error in one
        row's sampling, stop handling, text or stream fails that row alone: it leaves the
        batch, and the others decode on with the same tokens as without it."""
        self.step = []
        greedy = self.logits.argmax(dim=-1).tolist()  # one call for every plain greedy row
        failed: set[int] = set()
        for i, (row, row_logits, best) in enumerate(zip(self.rows, self.logits, greedy)):
            try:
                if row.plain_greedy:
                    token, logprob = best, None
                else:
                    token, logprob = row.next_token(row_logits)
                row.tokens.append(token)
                row.run.on_token(token, logprob)
            except Exception as exc:
                self._fail_row(row, exc)
                failed.add(i)
                token = 0  # never forwarded: the row leaves below
            self.step.append(token)
        keep, done = [], []
        for i, row in enumerate(self.rows):
            try:
                if i not in failed:
                    (done if row.run.poll() else keep).append(i)
            except Exception as exc:
                self._fail_row(row, exc)
        if not keep:
            # The batch ends with these rows: its KV stops counting before their finish events go
            # out, so a /metrics read right after a client's last event does not still see it.
            self.generator.live_cache = None
        for i in done:
            try:
                self.rows[i].run.finish()
                self._keep_prefix(i, self.rows[i])
            except Exception as exc:
                self._fail_row(self.rows[i], exc)
        if len(keep) < len(self.rows):  # drop the finished rows' KV and places
            index = torch.tensor(keep, device=self.device, dtype=torch.long)
            self.cache.batch_select_indices(index)
            self.mask, self.positions = self.mask[index], self.positions[index]
            self.rows = [self.rows[i] for i in keep]
            self.step = [self.step[i] for i in keep]

    @staticmethod
    def _fail_row(row: _Row, exc: Exception) -> None:
        log.warning("request %s failed alone: %s: %s", row.run.request.request_id, type(exc).__name__, exc,
                    extra={"event": "request_failed", "request_id": row.run.request.request_id})
        row.run.fail(f"generation failed: {type(exc).__name__}: {exc}")

    def _keep_prefix(self, index: int, row: _Row) -> None:
        """Give the prefix cache a finished row's prompt KV. Done when the row leaves, after its
        client has the answer, so storing never delays a prefill or a decode step."""
        if self.generator.prefix_cache is None:
            return
        in_cache = len(row.tokens) - 1  # the token just sampled was never forwarded
        start = self.cache.get_seq_length() - in_cache  # past this row's left padding
        prompt = row.run.request.prompt_ids
        self.generator.prefix_cache.store(prompt, kv_layers(self.cache, index, start))

    def forward(self) -> None:
        self.mask = torch.cat([self.mask, self.mask.new_ones((len(self.rows), 1))], dim=-1)
        self.positions = self.positions + 1
        ids = torch.tensor(self.step, device=self.device).unsqueeze(-1)
        if FAULTS.active:  # off outside tests: no list of requests per decode step
            inject_model_faults([row.run.request for row in self.rows])
        self.logits = self.loaded.model(input_ids=ids, attention_mask=self.mask, position_ids=self.positions,
                                        use_cache=True, **{self.cache_arg: self.cache}).logits[:, -1, :]
