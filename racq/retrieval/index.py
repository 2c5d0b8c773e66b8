"""The index itself: the corpus of passages, the fingerprint that says whether a stored index still
matches it, building, saving, loading and searching a FAISS index, and ranking an example's own passages.

racq.retrieval re-exports everything here; its docstring describes the index folder.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from racq.data.core import Example, Passage
from racq.data.rac import passage_examples
from racq.embedders import Embedder, as_embedder, hash_file
from racq.retrieval.config import (FIX, FORMAT_VERSION, INDEX_FILE, INDEX_TYPES, META_FILE, PASSAGES_FILE,
                                   IndexCorrupt, IndexMissing, RetrievalConfig)


def stderr_log(msg: str) -> None:
    """The default progress log of builds and loads: one prefixed line on stderr."""
    print(f"[racq index] {msg}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Hit:
    passage: Passage
    score: float
    rank: int  # 1-based


# ---------------------------------------------------------------- corpus
def build_corpus(examples: Iterable[Example] | None = None) -> list[Passage]:
    """Every passage of the given examples (default: all PASSAGE_DATASETS), first occurrence kept."""
    if examples is None:
        examples = passage_examples()
    return dedupe(p for ex in examples for p in ex.passages)


def dedupe(passages: Iterable[Passage]) -> list[Passage]:
    """The passages without repeats of an id, in order."""
    first: dict[str, Passage] = {}
    for p in passages:
        first.setdefault(p.pid, p)  # dicts keep insertion order: first occurrence wins, in place
    return list(first.values())


def passage_text(p: Passage) -> str:
    """What the embedder sees for a passage: the title carries meaning the text often lacks."""
    return f"{p.title}. {p.text}" if p.title else p.text


def _embed_all(emb: Embedder, texts: list[str], cfg: RetrievalConfig, log) -> np.ndarray:
    chunk = max(cfg.batch_size, 1) * 16
    parts, t0 = [], time.time()
    for i in range(0, len(texts), chunk):
        parts.append(emb.encode(texts[i:i + chunk], cfg.normalize, cfg.batch_size))
        if len(texts) > chunk:
            log(f"embedded {min(i + chunk, len(texts))}/{len(texts)} passages ({time.time() - t0:.0f} s)")
    return np.concatenate(parts)


# ---------------------------------------------------------------- fingerprint
def build_params(cfg: RetrievalConfig, n: int) -> dict:
    """The build settings of cfg.index_type for N passages (ValueError for an unknown type)."""
    if cfg.index_type == "flat":
        return {}
    if cfg.index_type == "hnsw":
        return {"m": cfg.hnsw_m, "ef_construction": cfg.hnsw_ef_construction}
    if cfg.index_type == "ivf":
        return {"nlist": cfg.ivf_nlist or _auto_nlist(n)}
    raise ValueError(f"unknown index_type {cfg.index_type!r}; choose one of {', '.join(INDEX_TYPES)}")


def _auto_nlist(n: int) -> int:
    # ~4*sqrt(n) lists, but keep >= 39 training points per list (faiss warns below that).
    return max(1, min(int(4 * n ** 0.5), n // 39))


def fingerprint_parts(passages: Sequence[Passage], emb: Embedder, cfg: RetrievalConfig) -> dict:
    return {"format": FORMAT_VERSION,
            "corpus": hashlib.sha256("\n".join(p.pid for p in passages).encode()).hexdigest()[:16],
            "n_passages": len(passages),
            "embedder": emb.identity,
            "index_type": cfg.index_type,
            "build_params": build_params(cfg, len(passages)),
            "normalize": bool(cfg.normalize)}


def fingerprint(parts: dict) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def stale_reason(stored: dict, current: dict) -> str:
    """Which fingerprint parts differ, in words ('the embedder changed, ...')."""
    names = {"corpus": "corpus", "n_passages": "corpus", "embedder": "embedder", "index_type": "index type",
             "build_params": "index build settings", "normalize": "normalisation", "format": "index format"}
    diffs = sorted({f"the {names[k]} changed" for k in current if stored.get(k) != current[k]})
    return ", ".join(diffs) or "the fingerprint differs"


# ---------------------------------------------------------------- index
def make_faiss_index(vecs: np.ndarray, cfg: RetrievalConfig, params: dict | None = None):
    """A FAISS index of cfg.index_type over these (normalised) vectors, inner-product metric."""
    import faiss

    params = build_params(cfg, len(vecs)) if params is None else params
    d = vecs.shape[1]
    if cfg.index_type == "flat":
        index = faiss.IndexFlatIP(d)
    elif cfg.index_type == "hnsw":
        index = faiss.IndexHNSWFlat(d, params["m"], faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = params["ef_construction"]
    else:
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, params["nlist"], faiss.METRIC_INNER_PRODUCT)
        # k-means on 64 points per list is plenty and keeps 1M-passage builds to minutes.
        sample = np.random.default_rng(0).permutation(len(vecs))[: 64 * params["nlist"]]
        index.train(vecs[np.sort(sample)])
    index.add(vecs)
    return index


class Index:
    """Passages + their FAISS index + the embedder that made it. Build, save, load, search."""

    def __init__(self, faiss_index, passages: list[Passage], meta: dict, embedder: Embedder | None,
                 source: str):
        self.faiss, self.passages, self.meta, self.source = faiss_index, passages, meta, source
        self._embedder = embedder
        self._pos = {p.pid: i for i, p in enumerate(passages)}
        self.k = 5
        self.set_search_params(meta.get("search_params", {}))

    # -- building and persistence
    @classmethod
    def build(cls, passages: Sequence[Passage], embedder=None, cfg: RetrievalConfig | None = None,
              log: Callable[[str], None] | None = None) -> "Index":
        cfg = cfg or RetrievalConfig()
        log = log or stderr_log
        passages = dedupe(passages)
        if not passages:
            raise ValueError("no passages to index: the corpus is empty")
        emb = as_embedder(embedder if embedder is not None else cfg.embedder)
        parts = fingerprint_parts(passages, emb, cfg)
        t0 = time.time()
        vecs = _embed_all(emb, [passage_text(p) for p in passages], cfg, log)
        index = make_faiss_index(vecs, cfg, parts["build_params"])
        meta = {"format": FORMAT_VERSION, "fingerprint": fingerprint(parts), "parts": parts,
                "embedder_name": emb.name, "embedder_identity": emb.identity, "dim": int(vecs.shape[1]),
                "index_type": cfg.index_type, "normalize": bool(cfg.normalize),
                "search_params": {"k": cfg.k, "ef_search": cfg.hnsw_ef_search, "nprobe": cfg.ivf_nprobe,
                                  "threads": cfg.threads},
                "n_passages": len(passages), "built_at": _dt.datetime.now(_dt.timezone.utc).isoformat(),
                "build_seconds": round(time.time() - t0, 2)}
        return cls(index, passages, meta, emb, source="built")

    def save(self, folder: str | Path) -> Path:
        """Write into a temporary sibling folder, then swap it in: readers never see half an index."""
        import faiss

        folder = Path(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".tmp-{folder.name}-"))
        try:
            faiss.write_index(self.faiss, str(tmp / INDEX_FILE))
            with open(tmp / PASSAGES_FILE, "w", encoding="utf-8") as fh:
                for p in self.passages:
                    fh.write(json.dumps({"pid": p.pid, "title": p.title, "text": p.text}, ensure_ascii=False) + "\n")
            meta = dict(self.meta, sha256={f: hash_file(tmp / f) for f in (INDEX_FILE, PASSAGES_FILE)})
            (tmp / META_FILE).write_text(json.dumps(meta, indent=2))  # last: marks the folder complete
            old = folder.with_name(f".old-{folder.name}-{tmp.name[-8:]}")
            if folder.exists():
                folder.rename(old)
            tmp.rename(folder)
            shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self.meta = meta
        return folder

    @staticmethod
    def read_meta(folder: str | Path) -> dict:
        folder = Path(folder)
        path = folder / META_FILE
        if not path.exists():
            if folder.is_dir() and any(folder.iterdir()):
                raise IndexCorrupt(f"index at {folder} has no {META_FILE} (incomplete write); {FIX}")
            raise IndexMissing(f"no index at {folder}: run `racq index build`")
        try:
            meta = json.loads(path.read_text())
            if not isinstance(meta, dict) or "fingerprint" not in meta:
                raise ValueError("no fingerprint")
        except (ValueError, OSError, UnicodeDecodeError) as e:
            raise IndexCorrupt(f"index at {folder}: {META_FILE} is unreadable ({e}); {FIX}") from None
        return meta

    @classmethod
    def load(cls, folder: str | Path, embedder=None, cfg: RetrievalConfig | None = None) -> "Index":
        """Load and verify (checksums, counts, dimension). Raises IndexMissing or IndexCorrupt.

        Without `embedder` the one named in meta.json is loaded on the first query.
        """
        import faiss

        folder = Path(folder)
        meta = cls.read_meta(folder)
        bad = lambda why: IndexCorrupt(f"index at {folder}: {why}; {FIX}")  # noqa: E731
        for name in (INDEX_FILE, PASSAGES_FILE):
            if not (folder / name).is_file():
                raise bad(f"{name} is missing")
            want = meta.get("sha256", {}).get(name)
            if want and hash_file(folder / name) != want:
                raise bad(f"{name} does not match its checksum (truncated or altered)")
        try:
            index = faiss.read_index(str(folder / INDEX_FILE))
        except RuntimeError as e:
            raise bad(f"{INDEX_FILE} is unreadable ({str(e).strip().splitlines()[-1]})") from None
        passages, lineno = [], 0
        with open(folder / PASSAGES_FILE, encoding="utf-8", errors="strict") as fh:
            try:
                for lineno, line in enumerate(fh, 1):
                    row = json.loads(line)
                    p = Passage(row["title"], row["text"])
                    if p.pid != row["pid"]:
                        raise ValueError("passage id does not match its text")
                    passages.append(p)
            except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
                raise bad(f"{PASSAGES_FILE} line {lineno} is unreadable ({e})") from None
        if index.ntotal != len(passages) or len(passages) != meta.get("n_passages"):
            raise bad(f"{index.ntotal} vectors for {len(passages)} passages (meta says {meta.get('n_passages')})")
        if index.d != meta.get("dim"):
            raise bad(f"index dimension {index.d} but meta says {meta.get('dim')}")
        if embedder is None and meta.get("embedder_name"):
            embedder = meta["embedder_name"]
        emb = as_embedder(embedder) if embedder is not None else None
        out = cls(index, passages, meta, emb, source="disk")
        if cfg is not None:  # search-time knobs may change without a rebuild
            out.set_search_params({"k": cfg.k, "ef_search": cfg.hnsw_ef_search, "nprobe": cfg.ivf_nprobe,
                                   "threads": cfg.threads})
        return out

    # -- searching
    def set_search_params(self, params: dict) -> None:
        self.k = int(params.get("k") or self.k)
        if params.get("threads"):
            import faiss

            faiss.omp_set_num_threads(int(params["threads"]))
        if hasattr(self.faiss, "hnsw") and params.get("ef_search"):
            self.faiss.hnsw.efSearch = int(params["ef_search"])
        if hasattr(self.faiss, "nprobe") and params.get("nprobe"):
            self.faiss.nprobe = int(params["nprobe"])

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            raise RuntimeError("this index was built with an injected embedder: pass the same one to "
                               "Index.load(folder, embedder=...)")
        return self._embedder

    def __len__(self) -> int:
        return len(self.passages)

    def embed_queries(self, queries: Sequence[str]) -> np.ndarray:
        for i, q in enumerate(queries):
            if not isinstance(q, str) or not q.strip():
                where = "" if len(queries) == 1 else f" (query #{i + 1} of {len(queries)})"
                raise ValueError(f"empty query{where}: type a question to retrieve passages for")
        return self.embedder.encode(list(queries), self.meta.get("normalize", True))

    def search_vectors(self, vecs: np.ndarray, k: int) -> list[list[Hit]]:
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        scores, ids = self.faiss.search(np.ascontiguousarray(vecs, dtype=np.float32), min(k, len(self)))
        out = []
        for srow, irow in zip(scores, ids):
            found = [(float(s), int(i)) for s, i in zip(srow, irow) if i >= 0]  # approximate may return -1
            out.append([Hit(self.passages[i], s, r) for r, (s, i) in enumerate(found, 1)])
        return out

    def search(self, query: str, k: int | None = None) -> list[Hit]:
        """Top-k passages for one query (k defaults to the config's), best first. Empty query -> ValueError."""
        return self.search_vectors(self.embed_queries([query]), self.k if k is None else k)[0]

    def search_many(self, queries: Sequence[str], k: int | None = None) -> list[list[Hit]]:
        """Top-k for each query (one embedder batch, one FAISS call)."""
        if not queries:
            return []
        return self.search_vectors(self.embed_queries(queries), self.k if k is None else k)

    def vectors(self, pids: Sequence[str]) -> np.ndarray | None:
        """Stored vectors of these passages, or None when one is not in the index."""
        try:
            ids = np.array([self._pos[p] for p in pids], dtype=np.int64)
        except KeyError:
            return None
        if hasattr(self.faiss, "make_direct_map") and not getattr(self, "_direct_map", False):
            self.faiss.make_direct_map()  # IVF cannot reconstruct without it
            self._direct_map = True
        return self.faiss.reconstruct_batch(ids)


# ---------------------------------------------------------------- ranking an example's own passages
def rank_passages(query: str, passages: Sequence[Passage], k: int | None = None, embedder=None,
                  index: Index | None = None, normalize: bool = True) -> list[Passage]:
    """The top-k of `passages` for `query`, best first, scored like the index scores them.

    Used by training prompts to order an example's own passages. With `index`, its embedder is
    used and passages already in it are not embedded again.
    """
    if not isinstance(query, str) or not query.strip():
        raise ValueError("empty query: cannot rank passages against it")
    passages = list(passages)
    if not passages:
        return []
    emb = index.embedder if index is not None else as_embedder(embedder)
    normalize = index.meta.get("normalize", True) if index is not None else normalize
    vecs = index.vectors([p.pid for p in passages]) if index is not None else None
    if vecs is None:
        vecs = emb.encode([passage_text(p) for p in passages], normalize)
    q = emb.encode([query], normalize)[0]
    scores = vecs @ q
    order = np.argsort(-scores, kind="stable")  # ties keep the records' own order
    return [passages[i] for i in order[: (k or len(passages))]]
