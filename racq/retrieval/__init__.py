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

The package: config.py (RetrievalConfig, file names, errors, index names), index.py (corpus, fingerprint,
the FAISS index, ranking), named.py (named indexes); here, the two entry points load_or_build and index_info.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Callable, Iterable, Sequence

from racq.data.core import Example, Passage
# the package's public names, importable from racq.retrieval as before the split
from racq.embedders import Embedder, as_embedder  # noqa: F401
from racq.retrieval.config import (FIX, FORMAT_VERSION, INDEX_FILE, INDEX_TYPES, META_FILE,  # noqa: F401
                                   PASSAGES_FILE, IndexCorrupt, IndexMissing, IndexStale, RetrievalConfig,
                                   check_name)
from racq.retrieval.index import (Hit, Index, build_corpus, build_params, dedupe, fingerprint,  # noqa: F401
                                  fingerprint_parts, make_faiss_index, passage_text, rank_passages, stale_reason,
                                  stderr_log)
from racq.retrieval.named import (build_named, index_root, list_indexes, load_checked, load_named, named_loader,  # noqa: F401
                                  named_index_dir)

# load_or_build and index_info live here, not in index.py: they call build_corpus through this module's
# globals, which is where tests replace it (monkeypatch.setattr(racq.retrieval, "build_corpus", ...))


def load_or_build(cfg: RetrievalConfig | None = None, examples: Iterable[Example] | None = None,
                  embedder=None, *, passages: Sequence[Passage] | None = None, force: bool = False,
                  log: Callable[[str], None] | None = None) -> Index:
    """The index for this corpus + embedder + index type: loaded when the stored fingerprint matches,
    else (missing, stale, corrupt, or `force`) built and saved. `index.source` says which.

    With `cfg.index` set, the named index is loaded as it is (load_named): never rebuilt. A folder at
    `cfg.index_dir` that holds a named index (its meta.json records a name) is treated the same way
    when no corpus is given, so the shipped corpus is never built over someone's own."""
    cfg = cfg or RetrievalConfig()
    log = log or stderr_log
    if cfg.index:
        return load_named(cfg.index, cfg, embedder)
    if passages is None and examples is None and not force:
        try:
            meta = Index.read_meta(cfg.index_dir)
        except (IndexMissing, IndexCorrupt):
            meta = {}
        if meta.get("name"):
            return load_checked(Path(cfg.index_dir), meta, cfg, embedder, meta["name"])
    passages = dedupe(passages) if passages is not None else build_corpus(examples)
    emb = as_embedder(embedder if embedder is not None else cfg.embedder)
    parts = fingerprint_parts(passages, emb, cfg)
    folder = Path(cfg.index_dir)
    if not force:
        try:
            meta = Index.read_meta(folder)
            if meta["fingerprint"] == fingerprint(parts):
                return Index.load(folder, emb, cfg)
            log(f"index at {folder} is stale ({stale_reason(meta.get('parts', {}), parts)}); rebuilding")
        except IndexMissing:
            log(f"no index at {folder}; building it ({len(passages)} passages)")
        except IndexCorrupt as e:
            log(f"{e}. Rebuilding it now")
    index = Index.build(passages, emb, cfg, log)
    index.save(folder)
    log(f"index saved to {folder} ({len(index)} passages, {index.meta['build_seconds']} s)")
    return index


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
            load_checked(folder, meta, cfg, None, meta["name"])
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
            out |= {"status": "stale", "reason": f"{stale_reason(stored, current)}; {FIX}"}
    return out
