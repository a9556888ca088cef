"""Small helpers over transformers' ``DynamicCache``: its forward() keyword, its size, one row's
layers (imports torch)."""

from __future__ import annotations

import inspect

import torch
from transformers import DynamicCache


def cache_argument(model) -> str:
    """The forward() keyword for the KV cache: ``cache`` from transformers 5.24 on (where
    ``past_key_values`` warns and is to go in 5.40), ``past_key_values`` before."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def cache_bytes(cache: DynamicCache) -> int:
    total = 0
    for layer in list(cache.layers):
        for tensor in (getattr(layer, "keys", None), getattr(layer, "values", None)):
            if isinstance(tensor, torch.Tensor):
                total += tensor.numel() * tensor.element_size()
    return total


def kv_layers(cache: DynamicCache, row: int = 0, start: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One row's (keys, values) per layer, from sequence position ``start`` (past left padding)."""
    return [(layer.keys[row:row + 1, :, start:], layer.values[row:row + 1, :, start:]) for layer in cache.layers]
