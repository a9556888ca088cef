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
from transformers.generation.logits_process import (
    RepetitionPenaltyLogitsProcessor,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

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
from engine.service.backoff import BatchLimit
from engine.service.faults import FAULTS
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


def sampling_processors(params, prompt_length: int) -> list[LogitsProcessor]:
    """Penalties, then (when sampling) temperature, top-k and top-p, numerically safe for every
    value the request schema admits; the same steps in sequential and dynamic mode."""
    processors: list[LogitsProcessor] = []
    if params.repetition_penalty != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(params.repetition_penalty))
    if params.frequency_penalty or params.presence_penalty:
        processors.append(OpenAIPenalties(prompt_length, params.frequency_penalty, params.presence_penalty))
    if processors:
        processors.append(FiniteScores())
    if not params.greedy:
        if params.temperature != 1.0:
            processors.append(StableTemperature(params.temperature))
        if params.top_k > 0:
            processors.append(TopKLogitsWarper(params.top_k))
        if params.top_p < 1.0:
            processors.append(TopPLogitsWarper(params.top_p))
    return processors


class InjectedFault(RuntimeError):
    """Raised where ``DEEPSEEK_ENGINE_FAULTS`` asks (tests only)."""


def inject_model_faults(requests: list[GenerationRequest]) -> None:
    """The faults of a model step shared by ``requests`` (off unless the variable is set)."""
    if not FAULTS.active:
        return
    sizes = [r.params.max_new_tokens for r in requests]
    if FAULTS.trip_any("oom", sizes):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected fault: oom)")
    if FAULTS.trip_any("model_step", sizes):
        raise InjectedFault("injected fault: model_step")


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
        self._settled = False  # its last event (finish or failure) has gone out
        self._pending_ids: list[int] = []  # generated, not yet sent with an event

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
        if FAULTS.active and FAULTS.trip("sample", self.request.params.max_new_tokens):
            raise InjectedFault("injected fault: sample")
        now = time.monotonic()
        self.completion_tokens += 1
        self._pending_ids.append(token_id)
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
            self.request.sink(TextEvent(content=content, reasoning=reasoning, token_ids=self._take_ids()))

    def _take_ids(self) -> list[int]:
        ids, self._pending_ids = self._pending_ids, []
        return ids

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
        """End this request with an error; the others decoding beside it are not touched."""
        if self._settled:
            return
        self._settled = True
        self._on_release(self)
        self.metrics.requests_total.labels(outcome="error", protocol=self.request.protocol).inc()
        try:
            self.request.sink(ErrorEvent(message))
        except Exception:  # the client's side is gone (its event loop closed): nothing to tell
            log.debug("could not deliver an error event", exc_info=True)

    def finish(self) -> None:
        """Flush held-back text and send the request's last event."""
        if self._settled:
            return
        self._settled = True
        self._on_release(self)
        self.end()
        ended = time.monotonic()
        request = self.request
        if self.timed_out:
            self.metrics.requests_total.labels(outcome="timeout", protocol=request.protocol).inc()
            request.sink(ErrorEvent(
                f"request ran past batching.request_timeout_s = {request.timeout_s:g} s "
                f"after {self.completion_tokens} tokens", status_code=504, error_type="timeout",
            ))
            return
        reason = self.finish_reason()
        self.metrics.requests_total.labels(outcome=reason, protocol=request.protocol).inc()
        self.metrics.e2e.observe(ended - request.arrival)
        request.sink(FinishEvent(
            finish_reason=reason,
            prompt_tokens=len(request.prompt_ids),
            completion_tokens=self.completion_tokens,
            time_to_first_token_s=None if self.first_token_at is None else self.first_token_at - request.arrival,
            duration_s=ended - request.arrival,
            token_ids=self._take_ids(),
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
        # Requests decoded together; lowered for a while after an out-of-memory failure.
        self.batch_limit = BatchLimit(batching.max_batch_size)
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
            self.metrics.requests_total.labels(outcome="cancelled", protocol=request.protocol).inc()
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
                runs = list(self._active.values())
                log.exception("generation failed", extra={"request_ids": [r.request.request_id for r in runs]})
                message = self._describe_failure(exc, len(runs))
                for run in runs:  # that batch's requests, and no others: those queued go on
                    run.fail(message)
                if self.loaded.device.type == "cuda":
                    torch.cuda.empty_cache()

    def _describe_failure(self, exc: Exception, batch: int) -> str:
        if isinstance(exc, torch.cuda.OutOfMemoryError):
            before = self.batch_limit.current()
            after = self.batch_limit.lower(batch, f"out of memory in a batch of {batch}")
            log.warning("out of memory: batch limit %s -> %s for %.0f s", before, after, self.batch_limit.backoff_s,
                        extra={"event": "batch_limit", "before": before, "after": after,
                               "for_s": self.batch_limit.backoff_s})
            return (f"the device ran out of memory decoding a batch of {batch} request(s); they failed, and the "
                    f"engine now decodes at most {after} together (was {before}) for "
                    f"{self.batch_limit.backoff_s:.0f} s; retry shortly")
        return f"generation failed: {type(exc).__name__}: {exc}"

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
            # Penalties, temperature, top-k and top-p come as ``sampling_processors`` (numerically
            # safe); generate's own would divide by a temperature of 1e-300 and sample NaN.
            temperature=1.0, top_k=None, top_p=1.0,
        )
        return config

    def _run(self, request: GenerationRequest) -> None:
        run = self.start_run(request)
        p = request.params
        processors = LogitsProcessorList(sampling_processors(p, len(request.prompt_ids)))
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


