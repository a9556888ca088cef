"""``llama-server`` and ``ollama``: the same settings for llama.cpp's server and for Ollama, when the
model came from a GGUF file (a ``.gguf`` model path, a folder holding one, or ``--gguf FILE``).

llama-server: ``-np`` parallel slots from ``max_batch_size``, ``-c`` the total context (slots x
context: llama.cpp divides it among the slots), ``-cb`` continuous batching, ``-ub/-b`` from the
token budget, ``-ctk/-ctv`` the KV cache type, ``--metrics``, ``--api-key`` from ``LLAMA_API_KEY``.
Ollama: a Modelfile (``FROM``, ``num_ctx``, the sampling defaults) and the server's environment
(``OLLAMA_NUM_PARALLEL``, ``OLLAMA_MAX_QUEUE``, ``OLLAMA_HOST``, ``OLLAMA_KV_CACHE_TYPE``); Ollama has
no API key. Where a setting has no counterpart, the header says so.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any, Optional

from engine.export.common import Note, Rendered, commented, header_lines
from engine.export.source import ExportError, ExportSource

KV_TYPES = {"float32": "f32", "float16": "f16", "bfloat16": "bf16"}
DEFAULT_CONTEXT = 4096


def gguf_file(source: ExportSource, gguf: Optional[str] = None) -> str:
    """The GGUF file the model came from.

    Raises:
        ExportError: the model is a safetensors folder with no GGUF file beside it.
    """
    if gguf:
        return gguf
    path = source.config.model.path
    if path and path.endswith(".gguf"):
        return path
    if path and Path(path).is_dir():
        found = sorted(Path(path).glob("*.gguf"))
        if found:
            return str(found[0])
    raise ExportError(f"llama.cpp and Ollama read GGUF files; the model {path or '(none)'} is not one and "
                      "holds none: pass --gguf FILE (the file it was imported from), or export --format vllm")


def _common_notes(source: ExportSource) -> list[Note]:
    config = source.config
    notes = [Note("batching.mode", f"{config.batching.mode}: llama.cpp's slots batch continuously"),
             Note("cache (prefix KV tiers)", "no RAM/disk tiers: each slot reuses its own prompt cache")]
    if config.batching.max_wait_ms and config.batching.mode == "dynamic":
        notes.append(Note("batching.max_wait_ms", "no counterpart"))
    if config.server.rate_limit or config.server.keys:
        notes.append(Note("server.rate_limit / server.keys", "one key (or none) and no rate limits"))
    notes.append(Note("server.circuit", "no circuit breaker"))
    return notes


def _context(source: ExportSource, notes: list[Note]) -> int:
    context = source.context_length
    if not context:
        notes.append(Note("context", f"unknown here: {DEFAULT_CONTEXT} per slot"))
        return DEFAULT_CONTEXT
    return int(context)


def _kv_type(source: ExportSource, notes: list[Note]) -> str:
    dtype = source.config.model.dtype
    if dtype == "auto":
        notes.append(Note("model.dtype = auto", "KV cache type f16, llama.cpp's default"))
        return "f16"
    return KV_TYPES[dtype]


def render_llama_server(source: ExportSource, gguf: Optional[str] = None, **_options: Any) -> Rendered:
    model = gguf_file(source, gguf)
    config, notes = source.config, _common_notes(source)
    slots = 1 if config.batching.mode == "sequential" else config.batching.max_batch_size
    context = _context(source, notes)
    kv = _kv_type(source, notes)
    flags = ["-m", model, "--host", config.server.host, "--port", str(config.server.port or 8080),
             "-np", str(slots), "-c", str(context * slots), "-cb", "-ctk", kv, "-ctv", kv, "--metrics"]
    if config.model.served_model_name:
        flags += ["--alias", config.model.served_model_name]
    if config.batching.max_batch_tokens:
        flags += ["-b", str(config.batching.max_batch_tokens)]
    flags += ["-ngl", "999" if source.device.startswith("cuda") else "0"]
    flags += ["-to", str(int(config.batching.request_timeout_s))]
    notes.append(Note("batching.request_timeout_s", "mapped to -to, llama-server's read/write timeout in seconds"))
    notes.append(Note("batching.max_queue", "no counterpart: requests wait for a free slot"))
    if config.server.metrics_public is False:
        notes.append(Note("server.metrics_public = false", "with --api-key set, llama-server guards /metrics too"))
    command = "llama-server " + " ".join(shlex.quote(f) for f in flags) + ' --api-key "$LLAMA_API_KEY"'
    lines = header_lines(source, f"llama.cpp server: {slots} slots of {context} tokens", notes)
    lines += ["", "the API key comes from the environment: export LLAMA_API_KEY=<key>"]
    text = "#!/bin/sh\n" + commented(lines) + 'set -eu\n: "${LLAMA_API_KEY:?set LLAMA_API_KEY to the API key}"\n'
    text += "exec " + command + ' "$@"\n'
    return Rendered(files={"llama-server.sh": text}, notes=notes, command=command)


# Ollama's PARAMETER names for the sampling defaults a preset may hold.
_OLLAMA_SAMPLING = {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "seed": "seed",
                    "repetition_penalty": "repeat_penalty", "max_tokens": "num_predict"}


def render_ollama(source: ExportSource, gguf: Optional[str] = None, **_options: Any) -> Rendered:
    model = gguf_file(source, gguf)
    config, notes = source.config, _common_notes(source)
    context = _context(source, notes)
    host = f"{config.server.host}:{config.server.port or 11434}"
    env = {"OLLAMA_HOST": host,
           "OLLAMA_NUM_PARALLEL": str(1 if config.batching.mode == "sequential" else config.batching.max_batch_size),
           "OLLAMA_MAX_QUEUE": str(config.batching.max_queue)}
    kv = _kv_type(source, notes)
    if kv in ("f16",):
        env["OLLAMA_KV_CACHE_TYPE"] = kv
    else:
        notes.append(Note("KV cache type", f"{kv}: Ollama offers f16, q8_0 and q4_0 only; f16 is its default"))
    notes.append(Note("server.api_key", "Ollama has no API key: keep it on 127.0.0.1 or put a proxy in front"))
    notes.append(Note("batching.request_timeout_s", "no counterpart"))
    if config.batching.max_batch_tokens:
        notes.append(Note("batching.max_batch_tokens", "no counterpart (llama.cpp's batch inside Ollama is fixed)"))
    params = [("num_ctx", context)]
    for key, value in (source.sampling or {}).items():
        if key in _OLLAMA_SAMPLING and value is not None:
            params.append((_OLLAMA_SAMPLING[key], value))
        elif key == "stop":
            params += [("stop", json_string(s)) for s in (value if isinstance(value, list) else [value])]
    name = config.model.served_model_name or Path(model).stem
    lines = header_lines(source, f"Ollama Modelfile: ollama create {name} -f Modelfile", notes)
    lines += ["", "the server needs this environment (set before 'ollama serve'):"]
    lines += [f"  {k}={v}" for k, v in env.items()]
    lines += ["then: " + " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items()) + " ollama serve &",
              f"      ollama create {shlex.quote(name)} -f Modelfile"]
    body = f"FROM {model}\n" + "".join(f"PARAMETER {k} {v}\n" for k, v in params)
    return Rendered(files={"Modelfile": commented(lines) + "\n" + body}, notes=notes)


def json_string(value: str) -> str:
    import json

    return json.dumps(value)
