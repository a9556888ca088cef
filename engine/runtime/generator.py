"""Generation on the model's own thread: a queue of requests decoded one at a time (imports torch).

Each request runs ``model.generate`` (so greedy output is exactly transformers' own) with a
streamer that turns tokens into text events and a stopping criterion that ends the request as
soon as its client is gone, its deadline passes or a stop string appears.
"""

from __future__ import annotations

import inspect
import logging
import queue
import threading
import time
from typing import Callable, Optional

import torch
from transformers import DynamicCache, GenerationConfig, LogitsProcessor, LogitsProcessorList, StoppingCriteria

from engine.config import BatchingConfig
from engine.metrics import EngineMetrics
from engine.requests import (
    ErrorEvent,
    FinishEvent,
    GenerationRequest,
    QueueFullError,
    TextEvent,
)
from engine.runtime.loader import LoadedModel
from engine.runtime.prefix_cache import PrefixCache
from engine.textstream import IncrementalDetokenizer, ReasoningSplitter, StopMatcher

log = logging.getLogger("engine.generator")


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


class RequestRun(StoppingCriteria):
    """Streamer and stopping criterion of one running request."""

    def __init__(self, loaded: LoadedModel, request: GenerationRequest, metrics: EngineMetrics,
                 on_release: Callable[["RequestRun"], None] = lambda run: None):
        self.request = request
        self.metrics = metrics
        self._on_release = on_release
        self.eos = set() if request.params.ignore_eos else set(loaded.eos_token_ids)
        self.detokenizer = IncrementalDetokenizer(loaded.tokenizer)
        self.stops = StopMatcher(request.params.stop)
        self.splitter = ReasoningSplitter(request.starts_in_reasoning)
        self.prompt_seen = False
        self.completion_tokens = 0
        self.first_token_at: Optional[float] = None
        self.last_token_at: Optional[float] = None
        self.hit_eos = False
        self.timed_out = False
        self._ended = False

    # -- streamer protocol (called by generate)
    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:  # generate() first hands over the prompt
            self.prompt_seen = True
            return
        for token_id in value.reshape(-1).tolist():
            self.on_token(int(token_id))

    def end(self) -> None:
        if self._ended:  # generate() calls it, and so does finish()
            return
        self._ended = True
        text = self.stops.push(self.detokenizer.flush()) + self.stops.flush()
        self._emit(*self.splitter.push(text))
        self._emit(*self.splitter.flush())

    # -- stopping criterion (called by generate after each step)
    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), self.poll(), dtype=torch.bool, device=input_ids.device)

    def poll(self) -> bool:
        """Check the deadline; True when the request needs no more tokens."""
        if self.request.past_deadline():
            self.timed_out = True
        return self.done

    def on_token(self, token_id: int) -> None:
        if self.hit_eos or self.stops.stopped:
            return
        now = time.monotonic()
        self.completion_tokens += 1
        self.metrics.generation_tokens.inc()
        if self.first_token_at is None:
            self.first_token_at = now
            self.metrics.ttft.observe(now - self.request.arrival)
        else:
            self.metrics.itl.observe(now - self.last_token_at)
        self.last_token_at = now
        if token_id in self.eos:
            self.hit_eos = True
            return
        text = self.stops.push(self.detokenizer.add(token_id))
        self._emit(*self.splitter.push(text))

    def _emit(self, reasoning: str, content: str) -> None:
        if reasoning or content:
            self.request.sink(TextEvent(content=content, reasoning=reasoning))

    @property
    def done(self) -> bool:
        """Nothing more to generate for this request (checked by batchers after each token)."""
        return (self.hit_eos or self.stops.stopped or self.request.cancelled or self.timed_out
                or self.completion_tokens >= self.request.params.max_new_tokens)

    def finish_reason(self) -> str:
        if self.request.cancelled:
            return "cancelled"
        if self.hit_eos or self.stops.stopped:
            return "stop"
        return "length"

    def fail(self, message: str) -> None:
        self.metrics.requests_total.labels(outcome="error").inc()
        self.request.sink(ErrorEvent(message))
        self._on_release(self)

    def finish(self) -> None:
        """Flush held-back text and send the request's last event."""
        self._on_release(self)
        self.end()
        ended = time.monotonic()
        request = self.request
        if self.timed_out:
            self.metrics.requests_total.labels(outcome="timeout").inc()
            request.sink(ErrorEvent(
                f"request ran past batching.request_timeout_s = {request.timeout_s:g} s "
                f"after {self.completion_tokens} tokens", status_code=504, error_type="timeout",
            ))
            return
        reason = self.finish_reason()
        self.metrics.requests_total.labels(outcome=reason).inc()
        self.metrics.e2e.observe(ended - request.arrival)
        request.sink(FinishEvent(
            finish_reason=reason,
            prompt_tokens=len(request.prompt_ids),
            completion_tokens=self.completion_tokens,
            time_to_first_token_s=None if self.first_token_at is None else self.first_token_at - request.arrival,
            duration_s=ended - request.arrival,
        ))


class QueuedGenerator:
    """Owns the generation thread; requests wait in a bounded queue. Subclasses decide how many
    requests run together (``_serve``). Implements ``engine.scheduling.Scheduler``."""

    mode = "base"
    warning: Optional[str] = None  # set when this scheduler stands in for the mode asked for

    def __init__(self, loaded: LoadedModel, metrics: EngineMetrics, batching: BatchingConfig,
                 prefix_cache: "Optional[PrefixCache]" = None):
        self.loaded = loaded
        self.metrics = metrics
        self.batching = batching
        self.prefix_cache = prefix_cache
        self._queue: "queue.Queue[Optional[GenerationRequest]]" = queue.Queue()
        self._stopping = False
        self._active: dict[int, RequestRun] = {}
        self.live_cache: Optional[DynamicCache] = None  # the KV of what is generating now
        self._thread = threading.Thread(target=self._loop, name="generation-loop", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def submit(self, request: GenerationRequest) -> None:
        """Queue a request; its events arrive through ``request.sink`` on the generation thread.

        Raises:
            QueueFullError: ``max_queue`` requests are already waiting.
        """
        max_queue = self.batching.max_queue
        if self._queue.qsize() >= max_queue:
            raise QueueFullError(f"{self._queue.qsize()} requests are waiting (batching.max_queue = {max_queue})")
        self.metrics.requests_waiting.inc()
        self._queue.put(request)

    def stop(self, join: bool = True, timeout: float = 5.0) -> None:
        """End the loop after the requests already queued."""
        self._queue.put(None)
        if join:
            self._thread.join(timeout)

    def _take(self, block: bool = True, timeout: Optional[float] = None) -> Optional[GenerationRequest]:
        """The next live request (cancelled ones are dropped here), or None: nothing came in
        time, or the stop sentinel was reached (then ``_stopping`` is set)."""
        while not self._stopping:
            try:
                request = self._queue.get(block=block, timeout=timeout)
            except queue.Empty:
                return None
            if request is None:
                self._stopping = True
                return None
            self.metrics.requests_waiting.dec()
            if not request.cancelled:
                return request
            self.metrics.requests_total.labels(outcome="cancelled").inc()
        return None

    def start_run(self, request: GenerationRequest) -> RequestRun:
        """A request starts running: counted until it finishes or fails."""
        self.metrics.queue_time.observe(time.monotonic() - request.arrival)
        self.metrics.prompt_tokens.inc(len(request.prompt_ids))
        self.metrics.requests_running.inc()
        run = RequestRun(self.loaded, request, self.metrics, on_release=self._release)
        self._active[id(run)] = run
        return run

    def cache_with_prefix(self, prompt_ids: list[int]) -> DynamicCache:
        """A KV cache holding the longest cached prefix of the prompt (empty on a miss)."""
        cache = DynamicCache(config=self.loaded.model.config)
        if self.prefix_cache is None:
            return cache
        hit = self.prefix_cache.lookup(prompt_ids)
        if hit is not None:
            for index, (keys, values) in enumerate(hit.layers):
                cache.update(keys, values, index)
            self.metrics.prefix_tokens_reused.inc(hit.tokens)
        return cache

    def kv_cache_bytes(self) -> float:
        """Bytes of the running requests' KV cache; read from the metrics thread, so a layer the
        generation thread is replacing may be counted before or after, never fails."""
        cache = self.live_cache
        return float(cache_bytes(cache)) if cache is not None else 0.0

    def _release(self, run: RequestRun) -> None:
        if self._active.pop(id(run), None) is not None:
            self.metrics.requests_running.dec()

    def _loop(self) -> None:
        while not self._stopping:
            requests = self._next_batch()
            if not requests:
                continue
            self.metrics.batch_size.observe(len(requests))
            try:
                self._serve(requests)
            except Exception as exc:  # the loop must outlive any one batch
                log.exception("generation failed", extra={"request_ids": [r.request_id for r in requests]})
                for run in list(self._active.values()):
                    run.fail(_describe_failure(exc))
                if self.loaded.device.type == "cuda":
                    torch.cuda.empty_cache()

    def _next_batch(self) -> list[GenerationRequest]:
        raise NotImplementedError

    def _serve(self, requests: list[GenerationRequest]) -> None:
        raise NotImplementedError


class SequentialGenerator(QueuedGenerator):
    """One request at a time through ``model.generate``: the baseline."""

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
            repetition_penalty=p.repetition_penalty,
        )
        if not p.greedy:
            config.temperature = p.temperature
            config.top_p = p.top_p
            config.top_k = p.top_k if p.top_k > 0 else None
        return config

    def _run(self, request: GenerationRequest) -> None:
        run = self.start_run(request)
        p = request.params
        processors = LogitsProcessorList()
        if p.frequency_penalty or p.presence_penalty:
            processors.append(OpenAIPenalties(len(request.prompt_ids), p.frequency_penalty, p.presence_penalty))
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


def cache_argument(model) -> str:
    """The forward() keyword for the KV cache: ``cache`` from transformers 5.24 on (where
    ``past_key_values`` warns and is to go in 5.40), ``past_key_values`` before."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def cache_bytes(cache: DynamicCache) -> int:
    total = 0
    for layer in list(cache.layers):
        for tensor in (getattr(layer, "keys", None), getattr(layer, "values", None)):
            if isinstance(tensor, torch.Tensor):
                total += tensor.numel() * tensor.element_size()
    return total


def kv_layers(cache: DynamicCache, row: int = 0, start: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One row's (keys, values) per layer, from sequence position ``start`` (past left padding)."""
    return [(layer.keys[row:row + 1, :, start:], layer.values[row:row + 1, :, start:]) for layer in cache.layers]


def _describe_failure(exc: Exception) -> str:
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return "the GPU ran out of memory for this request; try a shorter prompt or fewer max_tokens"
    return f"generation failed: {type(exc).__name__}: {exc}"
