"""Engine: the library face of the worker. The server maps its routes onto these methods.

The rooms behind it: ``engine.lifecycle`` (load, unload, states), ``engine.prompts`` (prompt
encoding), ``engine.scheduling`` (what a scheduler offers). Importing this module does not import
torch; ``load`` does, on first use.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterator, Optional

from engine.catalog import ModelEntry
from engine.config import ConfigError, EngineConfig, LoadConfig, ModelConfig, ServerConfig
from engine.events import EventBus
from engine.lifecycle import (
    LoadFailed,
    LoadInProgress,
    LoadOutcome,
    ModelLifecycle,
    ModelProblem,
    plan_weights,
    validate_model,
)
from engine.metrics import EngineMetrics
from engine.prompts import PromptError, encode_chat, encode_text, plan_max_tokens
from engine.protocol import new_id
from engine.requests import (
    Constraint,
    EngineNotReady,
    ErrorEvent,
    Event,
    FinishEvent,
    GenerationRequest,
    SamplingParams,
)
from engine.scheduling import Scheduler, ServedModel
from engine.states import ModelState

log = logging.getLogger("engine")

# The errors the server maps to statuses, importable from the front door.
__all__ = ["Engine", "LoadFailed", "LoadInProgress", "LoadOutcome", "ModelProblem", "PromptError"]


class Engine:
    """Owns the model, its tokenizer and the generation loop.

    Example:
        engine = Engine(EngineConfig.from_toml("engine.toml"))
        engine.load()
        for event in engine.generate_text("Hello", SamplingParams(max_new_tokens=20)):
            ...
    """

    def __init__(self, config: Optional[EngineConfig] = None):
        self.config = config or EngineConfig()
        self.metrics = EngineMetrics()
        self.events = EventBus()
        self._lifecycle = ModelLifecycle(self.metrics, self.events, settings=lambda: self.config,
                                         adopt=self._adopt)

    def _adopt(self, model: ModelConfig, load: LoadConfig) -> None:
        """The configuration in force names the model that serves now."""
        self.config = self.config.model_copy(update={"model": model, "load": load})

    # ------------------------------------------------------------------ model lifecycle
    def validate(self, model: ModelConfig) -> ModelEntry:
        """Check a model before any weight is read (torch-free).

        Raises:
            ModelProblem: the folder is broken or not loadable; the message names file and problem.
        """
        return validate_model(model)

    @property
    def loading(self) -> bool:
        return self._lifecycle.loading

    def start_load(self, model: Optional[ModelConfig] = None, load: Optional[LoadConfig] = None) -> None:
        """Validate, then load in the background; progress and outcome arrive on ``events``.

        Raises:
            ModelProblem: the model is broken (an ``error`` event is published too).
            LoadInProgress: another load is running.
        """
        model, load = model or self.config.model, load or self.config.load
        self._lifecycle.check_not_loading()  # before validating: a load running is the first answer
        try:
            entry = self.validate(model)
            weights = plan_weights(entry, model)  # a refused quantization: before any weight is read
        except ModelProblem as exc:
            self._lifecycle.refuse(exc, model.path)
            raise
        self._lifecycle.start_load(model, load, entry, weights)

    def load(self, model: Optional[ModelConfig] = None, load: Optional[LoadConfig] = None) -> LoadOutcome:
        """Load and wait; the outcome names the model now served.

        Raises:
            ModelProblem, LoadInProgress: as ``start_load``.
            LoadFailed: the load itself failed, was cancelled or timed out.
        """
        self.start_load(model, load)
        outcome = self._lifecycle.wait()
        if outcome is None or not outcome.loaded:
            raise LoadFailed(self.error or f"load ended in state {self.state}")
        return outcome

    def cancel_load(self) -> bool:
        """Stop the running load between two tensors; False when nothing is loading. Then
        ``wait_load`` tells whether it took effect (``cancelled``), or the load, past its last
        tensor, completed all the same."""
        return self._lifecycle.cancel()

    def wait_load(self, timeout: Optional[float] = None) -> Optional[LoadOutcome]:
        """The latest load's outcome once it has ended; None while it still runs after
        ``timeout`` seconds, or when no load has run."""
        return self._lifecycle.wait(timeout)

    def unload(self) -> None:
        """Stop serving after the requests already queued, and free the model."""
        self._lifecycle.unload()

    # ------------------------------------------------------------------ run-time settings
    RUNTIME_SECTIONS = ("batching", "cache")

    def update_config(self, changes: dict[str, Any],
                      on_server: Optional[Callable[[ServerConfig], None]] = None) -> EngineConfig:
        """Apply batching and cache settings at run time, without reloading weights.

        Requests already queued or running finish under the old settings; new ones use the new.

        Args:
            changes: sections of settings to change, e.g. ``{"batching": {"max_batch_size": 8}}``.
            on_server: whoever serves the ``server`` section (the service's rate limits and
                circuit); given, ``changes`` may hold that section, already in full values, and it
                is called with the new one while the change is made. Without it the section needs
                a restart.

        Raises:
            ConfigError: an unknown key, a refused value, or a section that needs a reload.
        """
        for section in changes:
            if section in ("model", "load"):
                raise ConfigError(f"{section}: changing it needs a reload of the weights; use POST /admin/load")
            if section == "server" and on_server is None:
                raise ConfigError("server: changing it needs a restart of the engine")
            if section not in (*self.RUNTIME_SECTIONS, "server"):
                raise ConfigError(f"{section}: unknown section (runtime sections: batching, cache)")
            if not isinstance(changes[section], dict):
                raise ConfigError(f"{section}: expected a table of settings")
        # Read, change and write the settings under the lock a load adopting its model takes,
        # so neither change is lost; a refusal raises before anything is written.
        with self._lifecycle.lock:
            old = self.config
            new = old.merged(changes)
            self.config = new
            self._lifecycle.rebuild_scheduler(old, new)
            if "server" in changes:
                on_server(new.server)
        log.info("config changed", extra={"event": "config", "changes": changes})
        return new

    def public_config(self) -> dict[str, Any]:
        """The configuration in force, as JSON, without the API key."""
        return self.config.model_dump(mode="json", exclude={"server": {"api_key"}})

    # ------------------------------------------------------------------ status
    @property
    def state(self) -> ModelState:
        return self._lifecycle.state

    @property
    def error(self) -> Optional[str]:
        """Why the latest load or refusal failed; None once a model serves."""
        return self._lifecycle.error

    @property
    def ready(self) -> bool:
        return self._lifecycle.model is not None

    @property
    def loaded(self) -> Optional[ServedModel]:
        """The loaded model (``engine.runtime.loader.LoadedModel``), or None."""
        return self._lifecycle.model

    @property
    def scheduler(self) -> Optional[Scheduler]:
        """The scheduler serving the loaded model, or None."""
        return self._lifecycle.scheduler

    @property
    def model_name(self) -> Optional[str]:
        return self._lifecycle.model_name

    @property
    def context_length(self) -> int:
        return self._require().context_length

    def serves(self, model_id: str) -> bool:
        """True when ``model_id`` names the loaded model (its id, folder name or path)."""
        loaded = self.loaded
        return loaded is not None and model_id in {loaded.name, loaded.path.name, str(loaded.path)}

    def health(self) -> tuple[bool, str]:
        scheduler = self.scheduler
        if self.loaded is not None and scheduler is not None:
            # A model that serves is healthy even while a replacement loads beside it.
            return (True, "ok") if scheduler.alive else (False, "generation loop is not running")
        if self.state in (ModelState.LOADING, ModelState.UNLOADING):
            return False, f"model is {self.state}"
        if self.state == ModelState.ERROR:
            return False, f"model failed to load: {self.error}"
        return False, "no model loaded"

    def describe(self) -> dict[str, Any]:
        import psutil

        loaded, scheduler = self.loaded, self.scheduler
        return {
            "state": self.state,
            "error": self.error,
            "process_rss_bytes": psutil.Process().memory_info().rss,
            "batching_mode": scheduler.mode if scheduler is not None else self.config.batching.mode,
            "batching_warning": scheduler.warning if scheduler is not None else None,
            "config": self.public_config(),
            "model": loaded.name if loaded else None,
            "path": str(loaded.path) if loaded else None,
            "device": str(loaded.device) if loaded else None,
            "dtype": str(loaded.dtype).removeprefix("torch.") if loaded else None,
            "context_length": loaded.context_length if loaded else None,
            "memory_bytes": loaded.device_memory_bytes() if loaded else None,
            "quantization": loaded.quantization if loaded else None,
        }

    def _require(self) -> ServedModel:
        loaded = self.loaded
        if loaded is None:
            raise EngineNotReady(self.health()[1])
        return loaded

    # ------------------------------------------------------------------ prompts
    def encode_chat(self, messages: list[dict], tools: Optional[list[dict]] = None) -> tuple[list[int], bool]:
        """Render ``messages`` (and ``tools``, for templates that render them) with the model's
        chat template and tokenize.

        Returns:
            the prompt's token ids, and whether the prompt leaves a ``<think>`` block open.
        Raises:
            PromptError: the model has no chat template, or the template refuses the messages.
        """
        return encode_chat(self._require(), messages, tools)

    def encode_text(self, prompt: str) -> list[int]:
        """Tokenize a plain prompt (with the tokenizer's own special tokens, e.g. BOS).

        Raises:
            PromptError: the text is not valid Unicode or holds no token.
        """
        return encode_text(self._require(), prompt)

    def plan_max_tokens(self, prompt_tokens: int, requested: Optional[int]) -> int:
        """How many tokens to generate: ``requested``, or what the context leaves.

        Raises:
            PromptError: the prompt plus ``requested`` does not fit in the context.
        """
        return plan_max_tokens(self.context_length, prompt_tokens, requested)

    # ------------------------------------------------------------------ generation
    def submit(
        self,
        prompt_ids: list[int],
        params: SamplingParams,
        sink,
        starts_in_reasoning: bool = False,
        request_id: Optional[str] = None,
        protocol: str = "library",
        constraint: Optional[Constraint] = None,
        prompt_logprobs: Optional[int] = None,
    ) -> GenerationRequest:
        """Queue a generation; events arrive through ``sink`` on the generation thread.

        Args:
            constraint: decode under this grammar (structured output, forced tool calls).
            prompt_logprobs: send the prompt tokens' log-probabilities (k alternatives each)
                with the finish event.
        Raises:
            EngineNotReady: no model loaded.
            engine.requests.QueueFullError: too many requests waiting.
            engine.requests.UnsupportedInMode: the batching mode cannot do what is asked.
            engine.requests.InvalidConstraint: the constraint's schema does not compile.
        """
        return self.submit_choices(prompt_ids, [params], [sink], starts_in_reasoning, request_id, protocol,
                                   constraint, prompt_logprobs)[0]

    def submit_choices(
        self,
        prompt_ids: list[int],
        params: list[SamplingParams],
        sinks: list,
        starts_in_reasoning: bool = False,
        request_id: Optional[str] = None,
        protocol: str = "library",
        constraint: Optional[Constraint] = None,
        prompt_logprobs: Optional[int] = None,
    ) -> list[GenerationRequest]:
        """Queue several choices of one prompt (OpenAI's ``n``), one ``params`` and ``sink``
        each; the scheduler takes them together (dynamic batching decodes them as rows of one
        batch from one prefill). Raises as ``submit``."""
        scheduler = self.scheduler
        if scheduler is None:
            raise EngineNotReady(self.health()[1])
        base = request_id or new_id("req")
        requests = [GenerationRequest(
            request_id=base if len(params) == 1 else f"{base}-{index}",
            prompt_ids=prompt_ids,
            params=choice,
            sink=sink,
            starts_in_reasoning=starts_in_reasoning,
            timeout_s=self.config.batching.request_timeout_s,
            protocol=protocol,
            constraint=constraint,
            # The prompt is the same for every choice: its log-probabilities come once.
            prompt_logprobs=prompt_logprobs if index == 0 else None,
        ) for index, (choice, sink) in enumerate(zip(params, sinks))]
        scheduler.submit_group(requests)
        return requests

    def generate_text(self, prompt: str, params: SamplingParams) -> Iterator[Event]:
        """Blocking iterator over the events of one plain-text generation."""
        import queue

        events: "queue.Queue[Event]" = queue.Queue()
        ids = self.encode_text(prompt)
        request = self.submit(ids, params, events.put)
        try:
            while True:
                event = events.get()
                yield event
                if isinstance(event, (FinishEvent, ErrorEvent)):
                    return
        finally:
            request.cancel()
