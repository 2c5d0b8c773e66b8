"""Small file helpers every part of RACQ may use (imports nothing of racq).

    from racq.files import write_atomic
    write_atomic("models/registry.json", "{}")
"""

from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: str | Path, text: str) -> Path:
    """Write `text` to a temporary name beside `path`, then rename it over `path`: a reader (or a killed
    writer) never sees half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
