"""Small helpers over transformers' ``DynamicCache``: its forward() keyword, its size, one row's
layers, and a cache whose layers grow in place (imports torch)."""

from __future__ import annotations

import inspect
from typing import Optional

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

# Tokens of room a layer's buffer gets beyond what it holds: a decode step writes its token into
# that room instead of copying the whole cache, so the cache is copied once per this many steps.
# Per row of the demo model that is 1.5 MB (32 tokens x 30 layers x K and V x 3 heads x 64 x 4 B).
HEADROOM_TOKENS = 32


def cache_argument(model) -> str:
    """The forward() keyword for the KV cache: ``cache`` from transformers 5.24 on (where
    ``past_key_values`` warns and is to go in 5.40), ``past_key_values`` before."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


class GrowingLayer(DynamicLayer):
    """A ``DynamicLayer`` whose keys and values are views of a buffer with room for more tokens.

    transformers' layer concatenates at every update: each decode step copies every layer's
    whole KV (at batch 32 and 128 tokens, 188 MB for the demo model, per step). Here a step
    writes its new token into the buffer's room and only a full buffer is copied, into one with
    ``HEADROOM_TOKENS`` more room. Whoever replaces ``keys``/``values`` (dropping rows, stacking
    newcomers, a prefix from the cache) needs no care: the next update sees they are no longer
    views of the buffer and adopts them into a new one.
    """

    _key_buffer: Optional[torch.Tensor] = None
    _value_buffer: Optional[torch.Tensor] = None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        self.keys, self._key_buffer = _append(self.keys, self._key_buffer, key_states)
        self.values, self._value_buffer = _append(self.values, self._value_buffer, value_states)
        return self.keys, self.values

    def reset(self) -> None:
        self._key_buffer = self._value_buffer = None
        super().reset()


def _append(held: torch.Tensor, buffer: Optional[torch.Tensor],
            new: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``held`` with ``new`` after it along the sequence, as a view of a buffer (the same one
    when ``held`` is its start and there is room), and that buffer."""
    length = held.shape[-2] if held.dim() == 4 else 0
    needed = length + new.shape[-2]
    in_place = (buffer is not None and length > 0 and held.data_ptr() == buffer.data_ptr()
                and held.stride() == buffer.stride() and held.shape[:2] == new.shape[:2]
                and held.shape[:2] == buffer.shape[:2] and needed <= buffer.shape[-2])
    if not in_place:
        shape = list(new.shape)
        shape[-2] = needed + HEADROOM_TOKENS
        buffer = new.new_empty(shape)
        if length:
            buffer[:, :, :length].copy_(held)
    buffer[:, :, length:needed].copy_(new)
    return buffer[:, :, :needed], buffer


def growing_cache(config) -> DynamicCache:
    """A ``DynamicCache`` for ``config`` whose full-attention layers grow in place
    (``GrowingLayer``); sliding-window and other layer kinds stay transformers' own."""
    cache = DynamicCache(config=config)
    for layer in cache.layers:
        if type(layer) is DynamicLayer:
            layer.__class__ = GrowingLayer
    return cache


def cache_bytes(cache: DynamicCache) -> int:
    """Bytes of memory the cache's tensors hold, each storage once: a growing layer's room for
    tokens to come counts, as it is allocated."""
    storages: dict[int, int] = {}
    for layer in list(cache.layers):
        for tensor in (getattr(layer, "keys", None), getattr(layer, "values", None)):
            if isinstance(tensor, torch.Tensor) and tensor.numel():
                storage = tensor.untyped_storage()
                storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())


def kv_layers(cache: DynamicCache, row: int = 0, start: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One row's (keys, values) per layer, from sequence position ``start`` (past left padding)."""
    return [(layer.keys[row:row + 1, :, start:], layer.values[row:row + 1, :, start:]) for layer in cache.layers]
