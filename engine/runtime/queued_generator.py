"""The generation thread and its bounded request queue, shared by the sequential and dynamic
schedulers (imports torch).

``QueuedGenerator`` takes requests off the queue, counts them while they run, and keeps the
loop alive when a batch fails: that batch's requests fail, the queued ones go on, and after an
out-of-memory failure fewer requests are decoded together for a while. Subclasses decide how
many requests run together (``_next_batch``) and how (``_serve``).
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from typing import Optional, Union

import torch
from transformers import DynamicCache

from engine.config import BatchingConfig
from engine.metrics import EngineMetrics
from engine.requests import FinishEvent, GenerationRequest, QueueFullError
from engine.runtime.backoff import BatchLimit
from engine.runtime.kv_cache import cache_bytes, growing_cache
from engine.runtime.loader import LoadedModel
from engine.runtime.prefix_cache import PrefixCache
from engine.runtime.request_run import RequestRun

log = logging.getLogger("engine.generator")  # the name its log lines have always carried


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
        self._queue: "queue.Queue[Union[GenerationRequest, tuple[GenerationRequest, ...], None]]" = queue.Queue()
        self._held: "collections.deque[GenerationRequest]" = collections.deque()  # a group's rest
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
        self.submit_group([request])

    def submit_group(self, requests: list[GenerationRequest]) -> None:
        """Queue the choices of one request (``n``) as one item, so they reach the generation
        thread together: dynamic batching decodes them as rows of one batch and prefills their
        shared prompt once.

        Raises:
            QueueFullError: ``max_queue`` requests are already waiting.
            InvalidConstraint: a structured-output schema cannot be compiled.
        """
        max_queue = self.batching.max_queue
        if self._queue.qsize() >= max_queue:
            raise QueueFullError(f"{self._queue.qsize()} requests are waiting (batching.max_queue = {max_queue})")
        for request in requests:
            if request.constraint is not None and request.grammar is None:
                request.grammar = self.loaded.grammars.compile(request.constraint)
        self.metrics.requests_waiting.inc(len(requests))
        self._queue.put(requests[0] if len(requests) == 1 else tuple(requests))

    def stop(self, join: bool = True, timeout: float = 5.0) -> None:
        """End the loop after the requests already queued."""
        self._queue.put(None)
        if join:
            self._thread.join(timeout)

    def _take(self, block: bool = True, timeout: Optional[float] = None) -> Optional[GenerationRequest]:
        """The next live request (cancelled ones end here), or None: nothing came in time, or
        the stop sentinel was reached (then ``_stopping`` is set)."""
        while not self._stopping:
            if self._held:
                request = self._held.popleft()
            else:
                try:
                    request = self._queue.get(block=block, timeout=timeout)
                except queue.Empty:
                    return None
                if request is None:
                    self._stopping = True
                    return None
                if isinstance(request, tuple):  # the choices of one request: the rest come next
                    self._held.extend(request[1:])
                    request = request[0]
            self.metrics.requests_waiting.dec()
            if not request.cancelled:
                return request
            self._end_unstarted(request)
        return None

    def _end_unstarted(self, request: GenerationRequest) -> None:
        """A request cancelled while it waited still gets its one last event, as a started one
        does. Nothing of it was processed, so it reports (and is charged) no tokens."""
        self.metrics.requests_total.labels(outcome="cancelled", protocol=request.protocol).inc()
        waited = time.monotonic() - request.arrival
        try:
            request.sink(FinishEvent(finish_reason="cancelled", prompt_tokens=0, completion_tokens=0,
                                     time_to_first_token_s=None, duration_s=waited))
        except Exception:  # the client's side is gone (its event loop closed): nothing to tell
            log.debug("could not deliver a cancelled request's finish event", exc_info=True)

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
        cache = growing_cache(self.loaded.model.config)
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
