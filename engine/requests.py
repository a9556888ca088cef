"""Generation requests and the events they produce (plain Python, no torch).

The runtime produces events on its own thread and hands them to ``GenerationRequest.sink``;
the server turns them into HTTP responses, library users read them from an iterator.
"""

from __future__ import annotations

import operator
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Union

# The range of each sampling setting, in pydantic's ``Field`` terms. One table for the API's
# request fields (``engine.protocol.SamplingFields``), presets' ``[sampling]`` and the defaults
# read from a model's generation_config.json, so none of them takes a value the API refuses.
# Plain Python: the catalog checks against it without loading pydantic.
SAMPLING_BOUNDS: dict[str, dict[str, float]] = {
    "max_tokens": {"ge": 1},
    "temperature": {"ge": 0.0, "le": 2.0},
    "top_p": {"gt": 0.0, "le": 1.0},
    "top_k": {"ge": -1},  # 0 or -1: off
    "repetition_penalty": {"gt": 0.0, "le": 10.0},
    "frequency_penalty": {"ge": -2.0, "le": 2.0},
    "presence_penalty": {"ge": -2.0, "le": 2.0},
    "seed": {"ge": 0, "lt": 2**63},
}
_COMPARISONS = {"ge": operator.ge, "gt": operator.gt, "le": operator.le, "lt": operator.lt}


def within_sampling_bounds(name: str, value: float) -> bool:
    """Whether the API would take ``value`` for the sampling setting ``name``."""
    return all(_COMPARISONS[kind](value, limit) for kind, limit in SAMPLING_BOUNDS[name].items())


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    seed: Optional[int] = None
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False
    # None: no log-probabilities; k (0-20): each generated token's, and its k likeliest alternatives.
    logprobs: Optional[int] = None
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, added to its logit)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


MAX_TOP_LOGPROBS = 20


@dataclass(frozen=True)
class Constraint:
    """What a reply must match, decoded under a grammar (``engine.runtime.grammar`` compiles it).

    ``kind`` is ``json_object`` (any JSON object), ``json_schema`` (``schema``: the schema as JSON
    text, keys sorted, so equal schemas share one compiled grammar) or ``tagged_json`` (the
    schema's JSON between ``prefix`` and ``suffix``: a tool call in the model's own format) or
    ``any_of`` (one of ``parts``).
    """

    kind: str
    schema: str = ""
    prefix: str = ""
    suffix: str = ""
    parts: tuple["Constraint", ...] = ()  # kind any_of: one of these


@dataclass
class TokenLogprob:
    """One generated (or prompt) token's log-probability under the model's raw distribution,
    and its likeliest alternatives as (token id, log-probability), best first."""

    token_id: int
    logprob: float
    top: list[tuple[int, float]] = field(default_factory=list)


@dataclass
class TextEvent:
    """New text; either part may be empty."""

    content: str = ""
    reasoning: str = ""
    token_ids: list[int] = field(default_factory=list)  # generated since the previous event
    logprobs: Optional[list[TokenLogprob]] = None  # one per token id, when the request asked


@dataclass
class FinishEvent:
    finish_reason: str  # stop | length | cancelled
    prompt_tokens: int
    completion_tokens: int
    time_to_first_token_s: Optional[float]
    duration_s: float
    token_ids: list[int] = field(default_factory=list)  # generated but not yet sent with text
    logprobs: Optional[list[TokenLogprob]] = None  # one per token id above, when asked
    # With echo: the prompt's tokens, the first without a log-probability (nothing precedes it).
    prompt_logprobs: Optional[list[Optional[TokenLogprob]]] = None


@dataclass
class ErrorEvent:
    message: str
    status_code: int = 500
    error_type: str = "server_error"


Event = Union[TextEvent, FinishEvent, ErrorEvent]


@dataclass
class GenerationRequest:
    request_id: str
    prompt_ids: list[int]
    params: SamplingParams
    sink: Callable[[Event], None]
    starts_in_reasoning: bool = False
    timeout_s: Optional[float] = None
    protocol: str = "library"  # rest | grpc | library: the label of engine_requests_total
    constraint: Optional[Constraint] = None  # decode under this grammar
    prompt_logprobs: Optional[int] = None  # k: the prompt tokens' log-probabilities and k alternatives
    grammar: Any = None  # the compiled ``constraint``, set by the scheduler that takes the request
    arrival: float = field(default_factory=time.monotonic)
    _cancelled: threading.Event = field(default_factory=threading.Event, repr=False)

    def cancel(self) -> None:
        """Stop generating for this request (client gone); takes effect before the next token."""
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def past_deadline(self, now: Optional[float] = None) -> bool:
        if self.timeout_s is None:
            return False
        return (now or time.monotonic()) - self.arrival > self.timeout_s


class QueueFullError(RuntimeError):
    """More requests are waiting than ``batching.max_queue`` allows."""


class EngineNotReady(RuntimeError):
    """No model is loaded (or it is still loading, or failed to load)."""


class UnsupportedInMode(ValueError):
    """The request asks for something the current batching mode cannot do exactly; a 400."""


class InvalidConstraint(ValueError):
    """The schema or grammar of a structured-output request cannot be compiled; a 400."""
