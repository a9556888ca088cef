"""Engine: the library face of the worker. The server maps its routes onto these methods.

Importing this module does not import torch; ``load`` does, on first use.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Iterator, Optional

from engine.config import EngineConfig, ModelConfig
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
        self.state = "idle"
        self.error: Optional[str] = None
        self._loaded: Any = None
        self._generator: Any = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ model lifecycle
    def _set_state(self, state: str, **fields: Any) -> None:
        self.state = state
        self.metrics.set_model_state(state)
        log.info("state %s", state, extra={"event": "state", "state": state, **fields})

    def load(self, model: Optional[ModelConfig] = None) -> None:
        """Load the configured model (or ``model``), replacing the one loaded.

        Raises:
            engine.runtime.loader.ModelLoadError: the folder cannot be loaded; the engine keeps
                no model and reports the reason in ``state``/``error``.
        """
        from engine.runtime.generator import SequentialGenerator
        from engine.runtime.loader import ModelLoadError, load_model

        cfg = model or self.config.model
        with self._lock:
            self._unload_locked()
            self._set_state("loading", path=cfg.path)
            started = time.monotonic()
            try:
                loaded = load_model(cfg)
            except ModelLoadError as exc:
                self.error = str(exc)
                self._set_state("error", error=self.error)
                raise
            self._loaded = loaded
            self._generator = SequentialGenerator(loaded, self.metrics, self.config.batching.max_queue)
            self.metrics.track_device_memory(loaded.device_memory_bytes)
            self.config = self.config.model_copy(update={"model": cfg})
            self.error = None
            self._set_state(
                "ready", model=loaded.name, device=str(loaded.device), dtype=str(loaded.dtype).removeprefix("torch."),
                context_length=loaded.context_length, load_s=round(time.monotonic() - started, 2),
            )

    def unload(self) -> None:
        with self._lock:
            self._unload_locked()
            self._set_state("idle")

    def _unload_locked(self) -> None:
        if self._loaded is None:
            return
        self._set_state("unloading")
        self._generator.stop()
        self._generator = self._loaded = None
        self.metrics.track_device_memory(None)
        import gc

        gc.collect()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()

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
        if self.state == "loading":
            return False, "model is loading"
        if self.state == "error":
            return False, f"model failed to load: {self.error}"
        if self._loaded is None:
            return False, "no model loaded"
        if not self._generator.alive:
            return False, "generation loop is not running"
        return True, "ok"

    def describe(self) -> dict[str, Any]:
        loaded = self._loaded
        return {
            "state": self.state,
            "error": self.error,
            "model": loaded.name if loaded else None,
            "path": str(loaded.path) if loaded else None,
            "device": str(loaded.device) if loaded else None,
            "dtype": str(loaded.dtype).removeprefix("torch.") if loaded else None,
            "context_length": loaded.context_length if loaded else None,
            "memory_bytes": loaded.device_memory_bytes() if loaded else None,
        }

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
