"""Grouped-query attention for a few new tokens without copying keys and values, for the joint engine.

    from racq.attention import use_packed_attention
    use_packed_attention(model)        # a transformers model using SDPA: its attention now goes through packed_sdpa

Why: SmolLM2 has 9 query heads over 3 key/value heads. With a mask and more than one new token (a decode
step of racq.multilora checks the last token plus guessed ones) transformers' SDPA path copies every
layer's keys and values 3x (repeat_kv) on every pass; folding each group's query heads into extra query
positions of their key/value head computes the same dot products with no copy (bench/README.md).
"""

from __future__ import annotations

import threading

import torch
from torch import nn

ATTENTION = "racq_packed_sdpa"


def packed_sdpa(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None, **kwargs):
    """transformers' attention-function signature: the query heads that share a key/value head become
    extra query positions of it ([b, kv, groups*t, d]), the mask repeated per group (why: the module
    docstring; 756 -> 245 us a layer here, bench/README.md run 4). The same dot products, equal up to
    float rounding. One token (transformers packs that itself), no mask or a per-head mask: transformers'
    own SDPA path."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    groups = getattr(module, "num_key_value_groups", 1)
    b, heads, t, d = query.shape
    if groups == 1 or t == 1 or attention_mask is None or attention_mask.shape[1] != 1 or dropout:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    out = nn.functional.scaled_dot_product_attention(
        query.reshape(b, key.shape[1], groups * t, d), key, value,
        attn_mask=_packed_mask(attention_mask, groups, query.dtype), scale=scaling)
    return out.reshape(b, heads, t, value.shape[-1]).transpose(1, 2).contiguous(), None


_MASK_MEMO = threading.local()  # per thread: (the last mask seen, its packed form)


def _packed_mask(mask: torch.Tensor, groups: int, dtype: torch.dtype) -> torch.Tensor:
    """The mask repeated per query group, as additive floats (SDPA converts a boolean one in every call):
    built once per forward pass, since all layers share the mask object."""
    last = getattr(_MASK_MEMO, "last", None)
    if last is None or last[0] is not mask:
        packed = mask.repeat(1, 1, groups, 1)
        if packed.dtype == torch.bool:
            packed = torch.zeros(packed.shape, dtype=dtype).masked_fill_(~packed, torch.finfo(dtype).min)
        last = _MASK_MEMO.last = (mask, packed)
    return last[1]


def use_packed_attention(model) -> None:
    """Route this copy's attention (and its mask building, which is SDPA's) through packed_sdpa; the
    PEFT model keeps its own config, so training and sampling are untouched."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTENTION, packed_sdpa)
    AttentionMaskInterface.register(ATTENTION, sdpa_mask)
    if getattr(model.config, "_attn_implementation", None) == "sdpa":
        model.config._attn_implementation = ATTENTION


__all__ = ["ATTENTION", "packed_sdpa", "use_packed_attention"]
