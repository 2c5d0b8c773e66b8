"""The joint engine's in-place decode cache (racq.kvcache) against transformers' own DynamicCache.

    .venv/bin/python -m pytest tests/test_kvcache.py -q
"""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM
from transformers.cache_utils import DynamicLayer

from racq.kvcache import GrowingLayer, batch_cache


def _dynamic(k, v) -> DynamicLayer:
    layer = DynamicLayer()
    layer.update(k, v)
    return layer


def _growing(k, v, room) -> GrowingLayer:
    kb, vb = (torch.full((*t.shape[:2], t.shape[2] + room, t.shape[3]), float("nan")) for t in (k, v))
    kb[:, :, :k.shape[2]], vb[:, :, :v.shape[2]] = k, v
    return GrowingLayer(kb, vb, k.shape[2])


def test_updates_give_what_concatenation_gives_and_the_buffer_grows_when_full():
    torch.manual_seed(0)
    k, v = torch.randn(2, 3, 5, 4), torch.randn(2, 3, 5, 4)
    want, got = _dynamic(k, v), _growing(k, v, room=2)  # room for 2: the third update must grow it
    for t in (1, 1, 3, 4):
        nk, nv = torch.randn(2, 3, t, 4), torch.randn(2, 3, t, 4)
        wk, wv = want.update(nk, nv)
        gk, gv = got.update(nk, nv)
        assert torch.equal(gk, wk) and torch.equal(gv, wv)
        assert got.get_seq_length() == want.get_seq_length()
    assert got._k.shape[2] >= 14 and not torch.isnan(got.keys).any()  # the unfilled room is never handed out


def test_dropping_rows_keeps_the_others_and_their_room():
    torch.manual_seed(1)
    k, v = torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4)
    want, got = _dynamic(k, v), _growing(k, v, room=8)
    idx = torch.tensor([0, 2])
    want.batch_select_indices(idx)
    got.batch_select_indices(idx)
    capacity = got._k.shape[2]
    nk, nv = torch.randn(2, 2, 3, 4), torch.randn(2, 2, 3, 4)
    wk, wv = want.update(nk, nv)
    gk, gv = got.update(nk, nv)
    assert torch.equal(gk, wk) and torch.equal(gv, wv) and got._k.shape[2] == capacity


def test_crop_drops_the_last_positions_and_refuses_a_positive_count():
    k = torch.randn(1, 1, 6, 2)
    got = _growing(k, k, room=2)
    got.crop(-2)
    assert got.get_seq_length() == 4 and torch.equal(got.keys, k[:, :, :4])
    with pytest.raises(ValueError, match="negative"):
        got.crop(1)


def test_batch_cache_left_pads_each_row_with_zeros():
    torch.manual_seed(2)
    rows = []
    for n in (3, 5):
        c = DynamicCache()
        for layer in range(2):
            c.update(torch.randn(1, 2, n, 4), torch.randn(1, 2, n, 4), layer)
        rows.append((c, n))
    cache = batch_cache(rows, room=4)
    assert len(cache.layers) == 2 and cache.get_seq_length() == 5
    first = cache.layers[1].keys
    assert first.shape == (2, 2, 5, 4)
    assert torch.equal(first[0, :, :2], torch.zeros(2, 2, 4))
    assert torch.equal(first[0, :, 2:], rows[0][0].layers[1].keys[0])
    assert torch.equal(first[1], rows[1][0].layers[1].keys[0])


def test_a_tiny_model_decodes_the_same_logits_as_with_a_concatenated_cache():
    """The engine's decode loop in small: two prompts prefilled apart, batched left-padded, then passes of
    several tokens each (as drafts give) with a growing mask; the logits equal the pad-and-cat cache's."""
    torch.manual_seed(3)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    model = LlamaForCausalLM(cfg).eval()
    prompts = [torch.randint(0, 64, (1, n)) for n in (7, 11)]
    prefilled = []
    for ids in prompts:
        c = DynamicCache()
        with torch.no_grad():
            model(input_ids=ids, cache=c, use_cache=True)
        prefilled.append((c, ids.shape[1]))
    width = max(n for _, n in prefilled)
    concat = DynamicCache(ddp_cache_data=[
        tuple(torch.cat([torch.nn.functional.pad(getattr(c.layers[i], kind), (0, 0, width - n, 0))
                         for c, n in prefilled]) for kind in ("keys", "values"))
        for i in range(cfg.num_hidden_layers)])
    inplace = batch_cache(prefilled, room=6)  # 3 passes of 3 tokens: it must grow once
    mask = torch.zeros(2, width, dtype=torch.long)
    for j, (_, n) in enumerate(prefilled):
        mask[j, width - n:] = 1
    for step in range(3):
        ids = torch.randint(0, 64, (2, 3))
        pos = torch.tensor([[n + 3 * step + i for i in range(3)] for _, n in prefilled])
        mask = torch.cat([mask, torch.ones(2, 3, dtype=torch.long)], dim=1)
        with torch.no_grad():
            want = model(input_ids=ids, attention_mask=mask, position_ids=pos, cache=concat).logits
            got = model(input_ids=ids, attention_mask=mask, position_ids=pos, cache=inplace).logits
        assert torch.allclose(got, want, atol=1e-6), f"pass {step}"
        mask[0, -1] = 0  # a rejected guess: masked out in both
