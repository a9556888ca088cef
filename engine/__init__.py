"""The DeepSeek Desktop engine: serve a local model over an OpenAI-compatible API.

This package's surface is torch-free; the runtime (torch, transformers) loads on first use.
"""

from engine.config import ConfigError, EngineConfig
from engine.core import Engine
from engine.requests import SamplingParams

__all__ = ["ConfigError", "Engine", "EngineConfig", "SamplingParams"]
