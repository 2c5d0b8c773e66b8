"""Named indexes of your own corpus, one folder each under index_root: build, load (checked against
their own recorded fingerprint, never rebuilt), list.
"""

from __future__ import annotations

import functools

import os
from pathlib import Path
from typing import Callable, Sequence

from racq.config import CACHE_DIR
from racq.data.core import Passage
from racq.retrieval.config import FIX, IndexCorrupt, IndexMissing, IndexStale, RetrievalConfig, check_name
from racq.retrieval.index import Index, fingerprint, fingerprint_parts, stale_reason, stderr_log


def index_root(cfg: RetrievalConfig | None = None) -> Path:
    """Where named indexes live: cfg.index_root, else $RACQ_INDEX_ROOT, else <cache>/indexes.

    Not inside the default index folder: saving that one swaps the whole folder."""
    cfg = cfg or RetrievalConfig()
    return Path(cfg.index_root or os.environ.get("RACQ_INDEX_ROOT") or CACHE_DIR / "indexes").expanduser()


def named_index_dir(name: str, cfg: RetrievalConfig | None = None) -> Path:
    """The folder of the index NAME (the name checked first)."""
    return index_root(cfg) / check_name(name)


def build_named(name: str, passages: Sequence[Passage], cfg: RetrievalConfig | None = None, embedder=None,
                source: dict | None = None, log: Callable[[str], None] | None = None) -> Index:
    """Embed `passages` into the named index `<index_root>/<name>/` (replacing one of that name).

    `source` (e.g. {"path": ..., "format": ..., "chunk_words": ...}) is recorded in meta.json."""
    cfg = cfg or RetrievalConfig()
    log = log or stderr_log
    folder = named_index_dir(name, cfg)
    index = Index.build(passages, embedder, cfg, log)
    index.meta.update(name=name, source=dict(source or {}))
    if folder.exists():
        log(f"replacing the index named {name!r} at {folder}")
    index.save(folder)
    log(f"index {name!r} saved to {folder} ({len(index)} passages, {index.meta['build_seconds']} s)")
    return index


def load_checked(folder: Path, meta: dict, cfg: RetrievalConfig, embedder, name: str) -> Index:
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
                         f"({stale_reason(stored, now)}); {fix}")
    return index


def named_loader(name: str | None, cfg: RetrievalConfig | None = None) -> Callable[[], Index] | None:
    """None for no name, else a function that loads the named index: what racq.data's load_examples takes as
    `index` for --data rows whose passage_ids point into it (it calls the function only when a row needs it,
    so racq.data never imports the retrieval code)."""
    return functools.partial(load_named, name, cfg or RetrievalConfig()) if name else None


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
    return load_checked(folder, meta, cfg, embedder, name)


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
