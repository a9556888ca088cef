"""The DeepSeek Desktop engine: serve a local model over an OpenAI-compatible API.

This package's surface is torch-free; the runtime (torch, transformers) loads on first use.
The names below load lazily, so importing a part (``engine.telemetry`` in the desktop app,
``engine.paths``) does not pay for the configuration models and the engine core.
"""

__all__ = ["ConfigError", "Engine", "EngineConfig", "SamplingParams"]

_HOMES = {"ConfigError": "engine.config", "EngineConfig": "engine.config", "Engine": "engine.core",
          "SamplingParams": "engine.requests"}


def __getattr__(name: str):
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
