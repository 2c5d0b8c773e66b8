"""The joint engine's decode-batch key/value cache: one buffer per layer with room to grow, written in place.

    from racq.kvcache import batch_cache
    cache = batch_cache([(cache_a, 250), (cache_b, 262)], room=64)   # two prefilled rows, left-padded to 262
    model(input_ids=..., attention_mask=..., position_ids=..., cache=cache)

Why: transformers' DynamicLayer appends a pass's keys and values with torch.cat, so every decode pass
copies the whole cache of every layer (3 rows x ~300 positions x 30 layers, twice): in a profile of two
whole queries that was 8.6 % of the CPU time. Here a pass writes only its own
new positions, and attention reads a view of the first `length` positions, the same shape (and values)
a DynamicLayer hands it. When the room runs out the buffer doubles (one copy, rare).
"""

from __future__ import annotations

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


class GrowingLayer(DynamicLayer):
    """A DynamicLayer whose keys/values are views of a preallocated buffer [rows, heads, capacity, dim]."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, length: int):
        """keys, values: buffers whose first `length` positions hold the cache (the rest is room)."""
        super().__init__()
        self.device, self.is_initialized = keys.device, True
        self._k, self._v, self._n = keys, values, length
        self._views()

    def _views(self) -> None:
        self.keys, self.values = self._k[:, :, :self._n], self._v[:, :, :self._n]

    def update(self, key_states, value_states, *args, **kwargs):
        t = key_states.shape[-2]
        if self._n + t > self._k.shape[2]:
            room = max(self._n + t, 2 * self._k.shape[2])
            self._k, self._v = (_refill(buf, self._n, room) for buf in (self._k, self._v))
        self._k[:, :, self._n:self._n + t] = key_states
        self._v[:, :, self._n:self._n + t] = value_states
        self._n += t
        self._views()
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self._n

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        # the remaining rows into new buffers of the same capacity, copying only the filled positions (a
        # row leaves the batch ~twice a query)
        self._k, self._v = (_refill(buf, self._n, buf.shape[2], indices) for buf in (self._k, self._v))
        self._views()

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove > 0:
            raise ValueError(f"crop takes a negative number of positions to drop, got {tokens_to_remove}")
        self._n = max(0, self._n + tokens_to_remove)
        self._views()


def _refill(buf: torch.Tensor, used: int, capacity: int, rows=slice(None)) -> torch.Tensor:
    """A new buffer of `capacity` positions holding the first `used` positions of BUF's chosen rows."""
    part = buf[rows, :, :used]
    out = buf.new_empty(part.shape[0], buf.shape[1], capacity, buf.shape[3])
    out[:, :, :used] = part
    return out


def batch_cache(rows: list[tuple[DynamicCache, int]], room: int) -> DynamicCache:
    """One cache for a batch of separately prefilled rows (each `(cache, length)`), each left-padded with
    zeros to the longest, with `room` free positions after it. The padding must be masked by the caller;
    the room is never read (a layer hands out only its filled positions)."""
    width = max(n for _, n in rows)
    layers = []
    for i in range(len(rows[0][0].layers)):
        bufs = []
        for kind in ("keys", "values"):
            first = getattr(rows[0][0].layers[i], kind)
            buf = first.new_empty(len(rows), first.shape[1], width + room, first.shape[3])
            for j, (cache, n) in enumerate(rows):
                buf[j, :, :width - n] = 0  # left padding, masked out: zeros, never uninitialised memory
                buf[j, :, width - n:width] = getattr(cache.layers[i], kind)[0]
            bufs.append(buf)
        layers.append(GrowingLayer(*bufs, width))
    cache = DynamicCache()
    cache.layers = layers
    return cache


__all__ = ["GrowingLayer", "batch_cache"]
