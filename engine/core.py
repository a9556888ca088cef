"""Engine: the library face of the worker. The server maps its routes onto these methods.

Importing this module does not import torch; ``load`` does, on first use.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Iterator, Optional

from pathlib import Path

from engine.catalog import ModelEntry, inspect_path
from engine.config import EngineConfig, LoadConfig, ModelConfig
from engine.events import EventBus
from engine.memory import device_memory, estimate
from engine.metrics import EngineMetrics
from engine.protocol import new_id
from engine.requests import (
    EngineNotReady,
    ErrorEvent,
    Event,
    FinishEvent,
    GenerationRequest,
    SamplingParams,
)
from engine.textstream import prompt_opens_reasoning

log = logging.getLogger("engine")


class ModelProblem(ValueError):
    """The model cannot be loaded as it is (broken folder, unknown architecture); a 4xx."""


class LoadInProgress(RuntimeError):
    """Another load is running."""


class LoadFailed(RuntimeError):
    """A load ended without a model: failed, cancelled or timed out."""


class PromptError(ValueError):
    """The prompt cannot be served as asked (too long, no chat template); a 400 for clients."""


def _tokenize(tokenizer, text: str, add_special_tokens: bool) -> list[int]:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:  # JSON may carry lone surrogates (\ud800) that no tokenizer takes
        raise PromptError(f"the prompt is not valid Unicode text: {exc.reason} at position {exc.start}") from None
    ids = list(tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])
    if not ids:
        raise PromptError("the prompt is empty: send at least one token of text")
    return ids


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
        self.state = "idle"
        self.error: Optional[str] = None
        self._loaded: Any = None
        self._generator: Any = None
        self._prefix_cache: Any = None
        self._lock = threading.Lock()          # guards swapping the loaded model
        self._load_thread: Optional[threading.Thread] = None
        self._cancel = threading.Event()
        self.last_load_cancelled = False  # whether the latest load was stopped by cancel_load

    # ------------------------------------------------------------------ model lifecycle
    def _set_state(self, state: str, **fields: Any) -> None:
        self.state = state
        self.metrics.set_model_state(state)
        log.info("state %s", state, extra={"event": "state", "state": state, **fields})
        self.events.publish({"type": "state", "state": state, "model": self.model_name, **fields})

    def _fail(self, message: str, **fields: Any) -> None:
        log.error("%s", message, extra={"event": "error", "error": message, **fields})
        self.events.publish({"type": "error", "message": message, **fields})

    def validate(self, model: ModelConfig) -> ModelEntry:
        """Check a model before any weight is read (torch-free).

        Raises:
            ModelProblem: the folder is broken or not loadable; the message names file and problem.
        """
        if not model.path:
            raise ModelProblem("no model path given")
        entry = inspect_path(Path(model.path))
        if entry.problem:
            raise ModelProblem(f"cannot load {model.path}: {entry.problem}")
        return entry

    @property
    def loading(self) -> bool:
        return self._load_thread is not None and self._load_thread.is_alive()

    def start_load(self, model: Optional[ModelConfig] = None, load: Optional[LoadConfig] = None) -> None:
        """Validate, then load in the background; progress and outcome arrive on ``events``.

        Raises:
            ModelProblem: the model is broken (an ``error`` event is published too).
            LoadInProgress: another load is running.
        """
        model, load = model or self.config.model, load or self.config.load
        if self.loading:
            raise LoadInProgress("a model is already loading; cancel it first (POST /admin/cancel-load)")
        try:
            entry = self.validate(model)
        except ModelProblem as exc:
            self._fail(str(exc), path=model.path)
            if self._loaded is None:  # nothing to fall back on: the engine is in error
                self.error = str(exc)
                self._set_state("error", error=self.error)
            raise
        self._cancel.clear()
        self._load_thread = threading.Thread(target=self._load_guarded, args=(model, load, entry),
                                             name="model-load", daemon=True)
        self._load_thread.start()

    def load(self, model: Optional[ModelConfig] = None, load: Optional[LoadConfig] = None) -> None:
        """Load and wait. Raises what ``start_load`` raises, and ``LoadFailed`` when the load
        itself fails, is cancelled or times out."""
        self.start_load(model, load)
        self._load_thread.join()
        if self.state != "ready" or (model and self.config.model.path != model.path):
            raise LoadFailed(self.error or f"load ended in state {self.state}")

    def cancel_load(self) -> bool:
        """Stop the running load between two tensors; False when nothing is loading."""
        if not self.loading:
            return False
        self._cancel.set()
        return True

    def wait_load(self, timeout: Optional[float] = None) -> None:
        if self._load_thread is not None:
            self._load_thread.join(timeout)

    def _load_guarded(self, model: ModelConfig, load: LoadConfig, entry: ModelEntry) -> None:
        try:
            self._load_now(model, load, entry)
        except Exception as exc:  # the load thread must always end in a reported state
            log.exception("load failed unexpectedly")
            self.error = f"{type(exc).__name__}: {exc}"
            self._set_state("ready" if self._loaded else "error", error=self.error)

    def _load_now(self, model: ModelConfig, load: LoadConfig, entry: ModelEntry) -> None:
        from engine.runtime.loader import LoadCancelled, ModelLoadError, load_model, release_memory

        previous = self.model_name
        if previous and not self._fits_beside_current(entry, model):
            log.info("unloading %s to make room", previous, extra={"event": "make_room", "model": previous})
            self.unload()
        self._set_state("loading", path=model.path, replacing=self.model_name)
        started = time.monotonic()
        try:
            loaded = load_model(model, load, emit=self.events.publish, cancel=self._cancel)
        except (LoadCancelled, ModelLoadError) as exc:
            release_memory()
            cancelled = isinstance(exc, LoadCancelled)
            self.last_load_cancelled = cancelled and exc.reason == "cancelled"
            self.error = f"load of {model.path} {exc.reason}" if cancelled else str(exc)
            if exc_is_failure := (not cancelled or exc.reason != "cancelled"):  # timeouts are failures
                self._fail(self.error, path=model.path)
            # The model served before (if any) is still there: back to it.
            self._set_state("ready" if self._loaded else ("error" if exc_is_failure else "idle"),
                            error=self.error, cancelled=cancelled)
            return
        from engine.runtime.modes import make_generator, make_prefix_cache

        self.last_load_cancelled = False
        with self._lock:
            old_generator = self._generator
            self._loaded = loaded
            self._prefix_cache = make_prefix_cache(loaded, self.metrics, self.config.cache)
            self._generator = make_generator(loaded, self.metrics, self.config.batching, self._prefix_cache)
            self.metrics.track_device_memory(loaded.device_memory_bytes)
            self.metrics.track_model(str(loaded.device), loaded.weights_bytes, self._kv_cache_bytes)
            self.config = self.config.model_copy(update={"model": model, "load": load})
            self.error = None
        if old_generator is not None:
            old_generator.stop(join=False)  # it finishes what it had queued, then frees the old model
        release_memory()
        self._set_state(
            "ready", device=str(loaded.device), dtype=str(loaded.dtype).removeprefix("torch."),
            context_length=loaded.context_length, load_s=round(time.monotonic() - started, 2),
            memory_bytes=loaded.device_memory_bytes(), estimated_bytes=self._estimate(entry, model),
        )

    def _estimate(self, entry: ModelEntry, model: ModelConfig) -> Optional[int]:
        try:
            return estimate(entry, model.dtype, 1, min(entry.context_length or 2048, 2048),
                            device=model.device if model.device != "auto" else "cpu").weights_bytes
        except ValueError:
            return None

    def _fits_beside_current(self, entry: ModelEntry, model: ModelConfig) -> bool:
        """Keep the current model while the new one loads only when both fit."""
        needed = self._estimate(entry, model)
        device = model.device if model.device != "auto" else str(self._loaded.device)
        free = device_memory(device).free_bytes
        return needed is not None and free is not None and needed * 1.2 < free

    RUNTIME_SECTIONS = ("batching", "cache")

    def update_config(self, changes: dict[str, Any]) -> EngineConfig:
        """Apply batching and cache settings at run time, without reloading weights.

        Requests already queued or running finish under the old settings; new ones use the new.

        Raises:
            ConfigError: an unknown key, a refused value, or a section that needs a reload.
        """
        from engine.config import ConfigError

        for section in changes:
            if section in ("model", "load"):
                raise ConfigError(f"{section}: changing it needs a reload of the weights; use POST /admin/load")
            if section == "server":
                raise ConfigError("server: changing it needs a restart of the engine")
            if section not in self.RUNTIME_SECTIONS:
                raise ConfigError(f"{section}: unknown section (runtime sections: batching, cache)")
            if not isinstance(changes[section], dict):
                raise ConfigError(f"{section}: expected a table of settings")
        merged = self.config.model_dump()
        for section, values in changes.items():
            merged[section].update(values)
        new = EngineConfig.from_dict(merged)
        with self._lock:
            old_config, self.config = self.config, new
            if self._loaded is not None and (new.batching != old_config.batching or new.cache != old_config.cache):
                from engine.runtime.modes import make_generator, make_prefix_cache

                if new.cache != old_config.cache:
                    self._prefix_cache = make_prefix_cache(self._loaded, self.metrics, new.cache)
                old = self._generator
                self._generator = make_generator(self._loaded, self.metrics, new.batching, self._prefix_cache)
                old.stop(join=False)  # what it holds finishes under the old settings
        log.info("config changed", extra={"event": "config", "changes": changes})
        return new

    def _kv_cache_bytes(self) -> float:
        generator = self._generator  # the current one: a replaced one only finishes its last requests
        return generator.kv_cache_bytes() if generator is not None else 0.0

    def unload(self) -> None:
        from engine.runtime.loader import release_memory

        with self._lock:
            if self._loaded is None:
                return
            name = self._loaded.name
            self._set_state("unloading")
            generator, self._generator, self._loaded = self._generator, None, None
            self._prefix_cache = None
            self.metrics.track_device_memory(None)
            self.metrics.track_model(None)
        generator.stop()
        del generator
        release_memory()
        self._set_state("idle", unloaded=name)

    # ------------------------------------------------------------------ status
    @property
    def ready(self) -> bool:
        return self._loaded is not None

    @property
    def model_name(self) -> Optional[str]:
        return self._loaded.name if self._loaded else None

    @property
    def context_length(self) -> int:
        return self._require().context_length

    def serves(self, model_id: str) -> bool:
        """True when ``model_id`` names the loaded model (its id, folder name or path)."""
        loaded = self._loaded
        return loaded is not None and model_id in {loaded.name, loaded.path.name, str(loaded.path)}

    def health(self) -> tuple[bool, str]:
        generator = self._generator
        if self._loaded is not None and generator is not None:
            # A model that serves is healthy even while a replacement loads beside it.
            return (True, "ok") if generator.alive else (False, "generation loop is not running")
        if self.state in ("loading", "unloading"):
            return False, f"model is {self.state}"
        if self.state == "error":
            return False, f"model failed to load: {self.error}"
        return False, "no model loaded"

    def describe(self) -> dict[str, Any]:
        import psutil

        loaded = self._loaded
        return {
            "state": self.state,
            "error": self.error,
            "process_rss_bytes": psutil.Process().memory_info().rss,
            "batching_mode": self._generator.mode if self._generator is not None else self.config.batching.mode,
            "batching_warning": getattr(self._generator, "warning", None),
            "config": self.public_config(),
            "model": loaded.name if loaded else None,
            "path": str(loaded.path) if loaded else None,
            "device": str(loaded.device) if loaded else None,
            "dtype": str(loaded.dtype).removeprefix("torch.") if loaded else None,
            "context_length": loaded.context_length if loaded else None,
            "memory_bytes": loaded.device_memory_bytes() if loaded else None,
        }

    def public_config(self) -> dict[str, Any]:
        """The configuration in force, as JSON, without the API key."""
        return self.config.model_dump(mode="json", exclude={"server": {"api_key"}})

    @property
    def loaded(self):
        """The loaded model (``engine.runtime.loader.LoadedModel``), or None."""
        return self._loaded

    def _require(self):
        loaded = self._loaded
        if loaded is None:
            raise EngineNotReady(self.health()[1])
        return loaded

    # ------------------------------------------------------------------ prompts
    def encode_chat(self, messages: list[dict[str, str]]) -> tuple[list[int], bool]:
        """Render ``messages`` with the model's chat template and tokenize.

        Returns:
            the prompt's token ids, and whether the prompt leaves a ``<think>`` block open.
        Raises:
            PromptError: the model has no chat template, or the template refuses the messages.
        """
        loaded = self._require()
        if not loaded.has_chat_template:
            raise PromptError(
                f"model {loaded.name!r} has no chat template, so it cannot take chat messages; "
                "use /v1/completions with a plain prompt, or add a chat template to its tokenizer_config.json"
            )
        try:
            text = loaded.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        except Exception as exc:  # jinja raises TemplateError and plain exceptions via raise_exception
            raise PromptError(f"the model's chat template refused these messages: {exc}") from None
        ids = _tokenize(loaded.tokenizer, text, add_special_tokens=False)
        return ids, prompt_opens_reasoning(text)

    def encode_text(self, prompt: str) -> list[int]:
        """Tokenize a plain prompt (with the tokenizer's own special tokens, e.g. BOS).

        Raises:
            PromptError: the text is not valid Unicode or holds no token.
        """
        return _tokenize(self._require().tokenizer, prompt, add_special_tokens=True)

    def plan_max_tokens(self, prompt_tokens: int, requested: Optional[int]) -> int:
        """How many tokens to generate: ``requested``, or what the context leaves.

        Raises:
            PromptError: the prompt plus ``requested`` does not fit in the context.
        """
        context = self.context_length
        if requested is None:
            if prompt_tokens >= context:
                raise PromptError(
                    f"the prompt has {prompt_tokens} tokens, which leaves no room to answer in the "
                    f"model's context length of {context} tokens; shorten the prompt"
                )
            return context - prompt_tokens
        if prompt_tokens + requested > context:
            raise PromptError(
                f"the prompt has {prompt_tokens} tokens and max_tokens is {requested}: together "
                f"{prompt_tokens + requested}, more than the model's context length of {context} "
                "tokens; shorten the prompt or lower max_tokens"
            )
        return requested

    # ------------------------------------------------------------------ generation
    def submit(
        self,
        prompt_ids: list[int],
        params: SamplingParams,
        sink,
        starts_in_reasoning: bool = False,
        request_id: Optional[str] = None,
    ) -> GenerationRequest:
        """Queue a generation; events arrive through ``sink`` on the generation thread.

        Raises:
            EngineNotReady: no model loaded.
            engine.requests.QueueFullError: too many requests waiting.
        """
        self._require()
        request = GenerationRequest(
            request_id=request_id or new_id("req"),
            prompt_ids=prompt_ids,
            params=params,
            sink=sink,
            starts_in_reasoning=starts_in_reasoning,
            timeout_s=self.config.batching.request_timeout_s,
        )
        self._generator.submit(request)
        return request

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
