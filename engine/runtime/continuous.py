"""Continuous batching through transformers' own manager (paged KV cache) (imports torch).

The manager decodes every running request at each step and admits new ones as blocks free up.
Its sampling is one setting for all requests (``do_sample``) with per-request temperature, top-k
and top-p, so greedy requests run as top-k 1 (the arg-max, as ``generate`` picks it); what it
cannot do per request (repetition/frequency/presence penalties, seeds) is refused with a message
that names the mode to use. Its defaults are sized for large GPUs; here they are sized from the
model and the device. Some architectures fail inside it without raising (DeepSeek-V3's K and V
head dims differ): a probe at load time finds out, and the engine falls back to dynamic batching.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Optional

from transformers import GenerationConfig

from engine.catalog import inspect_path
from engine.config import BatchingConfig
from engine.memory import device_memory
from engine.metrics import EngineMetrics
from engine.requests import GenerationRequest, QueueFullError, UnsupportedInMode
from engine.runtime.loader import LoadedModel
from engine.runtime.request_run import RequestRun

log = logging.getLogger("engine.continuous")

MIN_TEMPERATURE = 1e-4


class ContinuousUnsupported(RuntimeError):
    """The manager cannot serve this model; the message says why."""


def refuse_unsupported(request: GenerationRequest) -> None:
    """The manager samples inside its own step and hands back tokens only: it applies no
    per-request logits mask or bias and reports no log-probabilities."""
    per_row = [name for name, wanted in (
        ("structured output (response_format, guided_json, tool_choice 'required' or a named function)",
         request.constraint is not None),
        ("logprobs", request.params.logprobs is not None),
        ("echo with logprobs", request.prompt_logprobs is not None),
        ("logit_bias", bool(request.params.logit_bias)),
    ) if wanted]
    if per_row:
        raise UnsupportedInMode(f"{', '.join(per_row)} not available in batching mode 'continuous' (transformers' "
                                "manager applies no per-request logits mask); set batching.mode to 'dynamic' "
                                "or 'sequential' to use them")
    p = request.params
    if p.repetition_penalty != 1.0 or p.frequency_penalty or p.presence_penalty:
        raise UnsupportedInMode("repetition, frequency and presence penalties are not available in "
                                "batching mode 'continuous'; set batching.mode to 'dynamic' to use them")
    if p.seed is not None and not p.greedy:
        raise UnsupportedInMode("seeded sampling is not available in batching mode 'continuous'; "
                                "set batching.mode to 'dynamic' for reproducible sampling")


def size_manager(loaded: LoadedModel, batching: BatchingConfig):
    """Blocks and token budget from the model and the device, not the library's GPU defaults
    (measured on a tiny model on this CPU: 228 tok/s with the defaults, ~1,000 sized), and the
    bytes of the KV block pool they reserve."""
    from transformers.generation.configuration_utils import ContinuousBatchingConfig

    on_gpu = loaded.device.type == "cuda"
    page = batching.page_size or (256 if on_gpu else 32)
    # The same KV sizing and free-memory readings as the estimate the app shows before a load.
    per_token = inspect_path(loaded.path).kv_elements_per_token() or 1
    block_bytes = page * per_token * loaded.model.dtype.itemsize
    free = device_memory(str(loaded.device)).free_bytes
    if free is None and on_gpu:  # NVML unreadable: ask the CUDA runtime
        import torch

        free = torch.cuda.mem_get_info(loaded.device)[0]
    wanted = math.ceil(batching.max_batch_size * loaded.context_length / page)
    # The share defaults to 10%: the library refuses footprints much above what it thinks is free.
    blocks = batching.num_blocks or max(batching.max_batch_size * 2,
                                        min(wanted, int(free * batching.kv_memory_share // block_bytes)))
    budget = batching.max_batch_tokens or (4096 if on_gpu else 512)
    config = ContinuousBatchingConfig(
        page_size=page,
        num_blocks=blocks,
        max_batch_tokens=budget,
        max_requests_per_batch=batching.max_batch_size,
        max_blocks_per_request=min(blocks, math.ceil(loaded.context_length / page) + 1),
        allow_block_sharing=batching.block_sharing,
        cpu_offload_space=batching.cpu_offload_gb,
        per_request_processors=True,
    )
    return config, blocks * block_bytes


class ContinuousGenerator:
    """Implements ``engine.scheduling.Scheduler`` on transformers' continuous-batching manager."""

    mode = "continuous"
    warning: Optional[str] = None  # it never stands in for another mode

    def __init__(self, loaded: LoadedModel, metrics: EngineMetrics, batching: BatchingConfig, prefix_cache=None):
        self.loaded = loaded
        self.metrics = metrics
        self.batching = batching
        self.prefix_cache = None  # the manager shares prefix blocks itself
        vocab = loaded.model.config.vocab_size
        # Defaults that are not no-ops, so the library builds the temperature, top-k and top-p
        # processors at all; every request then sets all three for itself.
        config = GenerationConfig(do_sample=True, temperature=0.5, top_k=50, top_p=0.9,
                                  max_new_tokens=loaded.context_length, eos_token_id=list(loaded.eos_token_ids),
                                  pad_token_id=loaded.tokenizer.pad_token_id or 0)
        sizing, self._pool_bytes = size_manager(loaded, batching)
        self._manager = loaded.model.init_continuous_batching(generation_config=config,
                                                              continuous_batching_config=sizing)
        self._manager.start()
        self._runs: dict[str, RequestRun] = {}
        self._lock = threading.Lock()
        self._draining = False
        try:
            self._probe()
        except Exception:
            self._manager.stop(block=True, timeout=10)
            raise
        self._router = threading.Thread(target=self._route, name="continuous-router", daemon=True)
        self._router.start()

    def _probe(self) -> None:
        """Two greedy tokens: the library logs and returns empty results on some architectures."""
        self._manager.add_request([1, 2, 3, 4], request_id="probe", max_new_tokens=2, streaming=False,
                                  **self._sampling_kwargs(None))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            result = self._manager.get_result(timeout=1)
            if result is None:
                continue
            if result.error or len(result.generated_tokens) != 2:
                raise ContinuousUnsupported(
                    f"transformers' continuous batching cannot run {self.loaded.name}: "
                    f"{result.error or 'it returned no tokens'}")
            return
        raise ContinuousUnsupported("transformers' continuous batching gave no result within 120 s")

    def kv_cache_bytes(self) -> float:
        """The block pool is reserved whole when the manager starts (as vLLM's is)."""
        return float(self._pool_bytes)

    @property
    def alive(self) -> bool:
        return self._router.is_alive() and self._manager.is_running()

    def submit_group(self, requests: list[GenerationRequest]) -> None:
        """The choices of one request (``n``) as requests of their own; the manager shares
        their prompt's KV blocks when ``batching.block_sharing`` is on."""
        for request in requests:
            refuse_unsupported(request)
        for request in requests:
            self.submit(request)

    def submit(self, request: GenerationRequest) -> None:
        refuse_unsupported(request)
        with self._lock:
            if len(self._runs) >= self.batching.max_batch_size + self.batching.max_queue:
                raise QueueFullError(f"{len(self._runs)} requests are in the engine "
                                     f"(batching.max_batch_size + max_queue = {self.batching.max_batch_size + self.batching.max_queue})")
            run = RequestRun(self.loaded, request, self.metrics, on_release=self._release)
            self._runs[request.request_id] = run
        self.metrics.requests_running.inc()
        self.metrics.prompt_tokens.inc(len(request.prompt_ids))
        p = request.params
        self._manager.add_request(request.prompt_ids, request_id=request.request_id,
                                  max_new_tokens=p.max_new_tokens, streaming=True,
                                  eos_token_id=[] if p.ignore_eos else list(self.loaded.eos_token_ids),
                                  **self._sampling_kwargs(p))

    def _sampling_kwargs(self, p) -> dict:
        """Greedy is top-k 1: only the arg-max survives, so sampling returns it."""
        if p is None or p.greedy or p.temperature < MIN_TEMPERATURE:
            # Below MIN_TEMPERATURE sampling is the arg-max (its limit) and the manager's division
            # by the temperature would overflow into NaN.
            return {"temperature": 1.0, "top_k": 1, "top_p": 1.0}
        return {"temperature": p.temperature, "top_p": p.top_p,
                "top_k": p.top_k if p.top_k > 0 else self.loaded.model.config.vocab_size}

    def _release(self, run: RequestRun) -> None:
        with self._lock:
            if self._runs.pop(run.request.request_id, None) is not None:
                self.metrics.requests_running.dec()

    def _route(self) -> None:
        """Deliver the manager's outputs to each request's stream; cancel what is no longer wanted."""
        seen: dict[str, int] = {}
        while not (self._draining and not self._runs):
            result = self._manager.get_result(timeout=0.05)
            if result is not None:
                run = self._runs.get(result.request_id)
                if run is not None:
                    try:
                        self._deliver(run, result, seen)
                    except Exception as exc:  # this request's text or stream: it fails alone
                        log.warning("request %s failed alone: %s: %s", result.request_id, type(exc).__name__, exc,
                                    extra={"event": "request_failed", "request_id": result.request_id})
                        self._manager.cancel_request(result.request_id)
                        seen.pop(result.request_id, None)
                        run.fail(f"generation failed: {type(exc).__name__}: {exc}")
            for run in list(self._runs.values()):  # clients gone, deadlines passed
                run.poll()  # marks a request past its deadline as timed out
                if run.request.cancelled or run.timed_out:
                    self._manager.cancel_request(run.request.request_id)
                    seen.pop(run.request.request_id, None)
                    run.finish()
        self._manager.stop(block=True, timeout=30)

    def _deliver(self, run: RequestRun, result, seen: dict[str, int]) -> None:
        rid = result.request_id
        tokens = result.generated_tokens
        for token in tokens[seen.get(rid, 0):]:
            run.on_token(int(token))
            if run.poll():
                break
        seen[rid] = len(tokens)
        if result.error:
            seen.pop(rid, None)
            run.fail(f"generation failed: {result.error}")
        elif run.done or result.is_finished():
            if not result.is_finished():
                self._manager.cancel_request(rid)  # a stop string ended it early
            seen.pop(rid, None)
            run.finish()

    def stop(self, join: bool = True, timeout: float = 5.0) -> None:
        """Stop taking requests; the router ends once those in flight are done."""
        self._draining = True
        if join:
            for run in list(self._runs.values()):  # an unload does not wait for long generations
                run.request.cancel()
            self._router.join(timeout)
