"""HTML fragments for the screens. Every piece of text that came from a user, a corpus or a model goes
through `esc` first: queries, passages and questions render as text and never run as markup or script.
Text that goes into a gr.Markdown instead (names in the leaderboard's agreement line) goes through `md_esc`.
"""

from __future__ import annotations

import html
import re
import string
from typing import Iterable, Sequence

_WORD = re.compile(r"\w+(?:['’]\w+)*", re.UNICODE)


def esc(text) -> str:
    """HTML-escape anything (None -> ""). `$`, `{` and `}` are escaped too, so no template engine
    between us and the DOM can read a passage as an expression."""
    out = html.escape("" if text is None else str(text), quote=True)
    return out.replace("$", "&#36;").replace("{", "&#123;").replace("}", "&#125;")


def md_esc(text) -> str:
    """`text` as literal text inside Markdown (None -> ""). Every ASCII punctuation mark becomes a
    numeric character reference, which CommonMark shows as that character but never reads as syntax
    (emphasis, links, autolinks, HTML tags, tables, `$` maths); line breaks become spaces so a name
    cannot open a block of its own (heading, list, rule)."""
    flat = " ".join(("" if text is None else str(text)).splitlines())
    return "".join(f"&#{ord(c)};" if c in string.punctuation else c for c in flat)


def _field(p, name):
    return p.get(name) if isinstance(p, dict) else getattr(p, name, None)


def passages_html(passages: Sequence, prompt_k: int | None = None, label: str = "Passages") -> str:
    """An ordered list of passages (dicts with title/text[/score] or Passage objects). Passages past
    `prompt_k` are greyed: they were retrieved but not put in the prompt."""
    if not passages:
        return ""
    items = []
    for i, p in enumerate(passages):
        score = _field(p, "score")
        outside = prompt_k is not None and i >= prompt_k
        extra = " <span class='racq-score'>(not in the prompt)</span>" if outside else ""
        score_txt = f" <span class='racq-score'>{float(score):.3f}</span>" if score is not None else ""
        items.append(f"<li class='{'racq-outside' if outside else ''}'><b>{esc(_field(p, 'title'))}</b>"
                     f"{score_txt}{extra}<br>{esc(_field(p, 'text'))}</li>")
    return f"<div class='racq-label'>{esc(label)}</div><ol class='racq-passages'>{''.join(items)}</ol>"


def mark_words(text: str, wanted: Iterable[str], norm) -> str:
    """Escaped `text` with <mark> around each word whose normalised form (`norm(word)`) is wanted."""
    wanted = set(wanted)
    out, last = [], 0
    for m in _WORD.finditer(text or ""):
        out.append(esc(text[last:m.start()]))
        word = m.group(0)
        out.append(f"<mark>{esc(word)}</mark>" if norm(word) in wanted else esc(word))
        last = m.end()
    out.append(esc((text or "")[last:]))
    return "".join(out)


def table_html(headers: Sequence[str], rows: Iterable[Sequence], row_classes: Iterable[str] | None = None) -> str:
    """A plain table; every cell escaped."""
    classes = list(row_classes) if row_classes is not None else None
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        cls = f" class='{esc(classes[i])}'" if classes and classes[i] else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>")
    if not body:
        return ""
    return f"<table class='racq-table'><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def message_html(text: str, kind: str = "info") -> str:
    cls = "racq-error" if kind == "error" else "racq-pending" if kind == "pending" else ""
    return f"<div class='{cls}'>{esc(text)}</div>"
