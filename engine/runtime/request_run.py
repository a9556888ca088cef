"""One running request: turns its tokens into text events, decides when it is done, sends its
last event (imports torch).

Every scheduler keeps one ``RequestRun`` per request it decodes; in sequential mode it is also
the streamer and stopping criterion handed to ``model.generate``.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Optional

import torch
from transformers import StoppingCriteria

from engine.faults import FAULTS
from engine.metrics import EngineMetrics
from engine.requests import ErrorEvent, FinishEvent, GenerationRequest, TextEvent, TokenLogprob
from engine.runtime.faults import InjectedFault
from engine.runtime.loader import LoadedModel
from engine.runtime.sampling import prompt_logprobs, token_logprob
from engine.textstream import IncrementalDetokenizer, ReasoningSplitter, StopMatcher

log = logging.getLogger("engine.generator")  # the name its log lines have always carried


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
        self.wants_logprobs = request.params.logprobs is not None
        self._pending_logprobs: list[TokenLogprob] = []  # one per pending id, when wanted
        # Sequential mode: the raw scores' log-probabilities recorded by ``RecordLogprobs``
        # before generate samples, matched to the token when the streamer hands it over.
        self.recorded: list[torch.Tensor] = []
        self.grammar = loaded.grammars.matcher(request.grammar) if request.grammar is not None else None
        self.prompt_logprobs = None
        if request.prompt_logprobs is not None:
            self.prompt_logprobs = prompt_logprobs(loaded.model, request.prompt_ids, request.prompt_logprobs)

    # -- streamer protocol (called by generate)
    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:  # generate() first hands over the prompt
            self.prompt_seen = True
            return
        for token_id in value.reshape(-1).tolist():
            entry = None
            if self.wants_logprobs and self.recorded:
                entry = token_logprob(self.recorded.pop(0), int(token_id), self.request.params.logprobs)
            self.on_token(int(token_id), entry)

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

    def on_token(self, token_id: int, logprob: Optional[TokenLogprob] = None) -> None:
        if self.hit_eos or self.stops.stopped:
            return
        if self.grammar is not None:
            self.grammar.accept(token_id)
        if FAULTS.active and FAULTS.trip("sample", self.request.params.max_new_tokens):
            raise InjectedFault("injected fault: sample")
        now = time.monotonic()
        self.completion_tokens += 1
        self._pending_ids.append(token_id)
        if logprob is not None:
            self._pending_logprobs.append(logprob)
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
            self.request.sink(TextEvent(content=content, reasoning=reasoning, token_ids=self._take_ids(),
                                        logprobs=self._take_logprobs()))

    def _take_ids(self) -> list[int]:
        ids, self._pending_ids = self._pending_ids, []
        return ids

    def _take_logprobs(self) -> Optional[list[TokenLogprob]]:
        if not self.wants_logprobs:
            return None
        entries, self._pending_logprobs = self._pending_logprobs, []
        return entries

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
            logprobs=self._take_logprobs(),
            prompt_logprobs=self.prompt_logprobs,
        ))
