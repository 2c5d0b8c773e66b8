"""Small file helpers every part of RACQ may use (imports nothing of racq).

    from racq.files import check_name, write_atomic
    write_atomic("models/registry.json", "{}")
    check_name("my-index")   # a name safe as a folder or registry key, else ValueError
"""

from __future__ import annotations

import os
import re
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


NAME_RULE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_name(name: str, what: str = "index") -> str:
    """A name that is safe as a folder or registry key (an index, a registered model)."""
    if not isinstance(name, str) or not NAME_RULE.match(name):
        raise ValueError(f"bad {what} name {name!r}: use letters, digits, '.', '_' or '-' (at most 64, "
                         f"starting with a letter or digit)")
    return name
