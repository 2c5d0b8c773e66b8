"""Retrieval speed and quality: approximate indexes (hnsw, ivf) against the exact one, same run.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_retrieval.py --threads 1     # 10k and 100k, ~1-2 min on 2 cores
    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_retrieval.py --million       # adds 1M: ~13 min, ~3.5 GB RAM
    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_retrieval.py --real-index ~/.cache/racq/index

For each corpus size it builds the exact index (IndexFlatIP, the baseline) and each approximate type
with the settings of racq.retrieval.RetrievalConfig, then times queries one at a time (what the app
does) and as one batch, and measures recall@10 = share of the exact top-10 that the approximate
index also returns. Ratios are against the exact index measured in the same run on the same vectors.

Vectors: synthetic 384-d, normalised, in clusters (like topics; uniform random vectors are a
degenerate worst case for approximate search: pass --uniform to see it), queries = noisy copies of
corpus vectors. With --real-index, the real MiniLM passage vectors of a built index come first and
real PaQa/CAmbigNQ queries are used; synthetic vectors fill the corpus up to each size.
"""

from __future__ import annotations

import argparse
import gc
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import faiss  # noqa: E402
import numpy as np  # noqa: E402

from racq.retrieval import RetrievalConfig, make_faiss_index  # noqa: E402

DIM = 384


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def synthetic(n: int, rng: np.random.Generator, uniform: bool, centers: np.ndarray) -> np.ndarray:
    out = np.empty((n, DIM), np.float32)
    for i in range(0, n, 100_000):  # in chunks: 1M float64 temporaries would need 3 GB
        m = min(100_000, n - i)
        if uniform:
            out[i:i + m] = _normalise(rng.standard_normal((m, DIM), np.float32))
        else:
            # cosine to the cluster centre ~0.6, like passages of one topic
            noise = rng.standard_normal((m, DIM), np.float32) * 0.068
            out[i:i + m] = _normalise(centers[rng.integers(len(centers), size=m)] + noise)
    return out


def real_vectors(folder: str, nq: int):
    from racq.data import PASSAGE_DATASETS, load_examples
    from racq.retrieval import Index

    index = Index.load(folder)
    vecs = index.vectors([p.pid for p in index.passages])
    queries = [ex.query for ex in load_examples(PASSAGE_DATASETS)[:nq]]
    return np.ascontiguousarray(vecs, np.float32), index.embed_queries(queries)


def time_queries(index, queries: np.ndarray, k: int):
    """(ms per query one at a time, ms per query in one batch, ids of the batch search)."""
    index.search(queries[:1], k)  # warm-up: first call allocates
    t0 = time.perf_counter()
    for i in range(len(queries)):
        index.search(queries[i:i + 1], k)
    single = (time.perf_counter() - t0) * 1000 / len(queries)
    t0 = time.perf_counter()
    _, ids = index.search(queries, k)
    batch = (time.perf_counter() - t0) * 1000 / len(queries)
    return single, batch, ids


def recall_at_k(exact: np.ndarray, approx: np.ndarray) -> float:
    return float(np.mean([len(set(e) & set(a)) / len(e) for e, a in zip(exact, approx)]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10000,100000", help="comma-separated corpus sizes")
    ap.add_argument("--million", action="store_true", help="also run 1,000,000 passages (slow, ~7 GB)")
    ap.add_argument("--types", default="hnsw,ivf", help="approximate index types to compare")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--uniform", action="store_true", help="uniform random vectors instead of clusters")
    ap.add_argument("--real-index", help="folder of a built racq index: its vectors + real queries first")
    ap.add_argument("--threads", type=int, default=0,
                    help="FAISS OpenMP threads (0 = faiss default). On a busy 2-core box, 1 thread is far "
                         "faster for one-at-a-time queries: idle OpenMP threads wait on descheduled ones")
    args = ap.parse_args()
    if args.threads:
        faiss.omp_set_num_threads(args.threads)

    sizes = [int(s) for s in args.sizes.split(",") if s] + ([1_000_000] if args.million else [])
    types = [t for t in args.types.split(",") if t]
    cfg = RetrievalConfig()
    rng = np.random.default_rng(0)
    centers = _normalise(rng.standard_normal((1000, DIM), np.float32))
    head, real_q = real_vectors(args.real_index, args.queries) if args.real_index else (None, None)
    print(f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads, {os.cpu_count()} CPUs, "
          f"{'real + ' if head is not None else ''}{'uniform' if args.uniform else 'clustered'} vectors, "
          f"{args.queries} queries, k={args.k}; hnsw M={cfg.hnsw_m} efC={cfg.hnsw_ef_construction} "
          f"efSearch={cfg.hnsw_ef_search}, ivf nlist=auto nprobe={cfg.ivf_nprobe}")
    header = f"{'passages':>9} {'index':>5} {'build s':>8} {'ms/q 1by1':>10} {'x exact':>8} " \
             f"{'ms/q batch':>11} {'x exact':>8} {'recall@10':>10}"
    print(header)
    print("-" * len(header))
    for n in sizes:
        parts = [head[:n]] if head is not None else []
        filler = n - sum(len(p) for p in parts)
        if filler > 0:
            parts.append(synthetic(filler, rng, args.uniform, centers))
        vecs = np.ascontiguousarray(np.concatenate(parts) if len(parts) > 1 else parts[0])
        del parts
        if real_q is not None:
            queries = real_q[: args.queries]
        else:
            picks = vecs[rng.integers(n, size=args.queries)]
            queries = _normalise(picks + rng.standard_normal(picks.shape, np.float32) * 0.03)
        queries = np.ascontiguousarray(queries, np.float32)
        base_single = base_batch = exact_ids = None
        for kind in ["flat"] + types:
            kcfg = RetrievalConfig(index_type=kind)
            t0 = time.perf_counter()
            index = make_faiss_index(vecs, kcfg)
            build = time.perf_counter() - t0
            if kind == "hnsw":
                index.hnsw.efSearch = kcfg.hnsw_ef_search
            if kind == "ivf":
                index.nprobe = kcfg.ivf_nprobe
            single, batch, ids = time_queries(index, queries, args.k)
            if kind == "flat":
                base_single, base_batch, exact_ids = single, batch, ids
            rec = recall_at_k(exact_ids, ids)
            print(f"{n:>9,} {kind:>5} {build:>8.1f} {single:>10.3f} {single / base_single:>8.3g} "
                  f"{batch:>11.3f} {batch / base_batch:>8.3g} {rec:>10.3f}", flush=True)
            del index
            gc.collect()
        del vecs
        gc.collect()


if __name__ == "__main__":
    main()
