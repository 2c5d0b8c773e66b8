"""Text normalisation and option extraction for clarifying questions (used by racq.scoring.faithfulness).

    from racq.scoring.options import extract_options
    [o.text for o in extract_options("Which chairman: 4th, 3rd, or 2nd?", "who is the current chairman")]
    # -> ['4th', '3rd', '2nd']

Normalisation (`norm_tokens`): lower-case; curly quotes folded; possessive 's dropped ("men's" -> men);
thousands separators joined ("3,584" -> 3584); short year ranges expanded ("1989-93" -> 1989-1993);
hyphens and slashes split ("2003-2015" -> 2003 2015); ordinals to plain digits ("fourth", "4th" -> 4,
so "fifth season" meets "season 5"); cardinal words two..twenty to digits; a
few irregular forms to their base (won -> win, women -> woman, written -> write); then Porter stemming
(plurals, -ing/-ed). Content tokens are normalised tokens that are neither stopwords nor *frame*
words (the words that make a clarifying question a question: "looking", "interested", "mean",
"specific", "else", ...).

Extraction rules, in order (`extract_options`):
1. Separator list: text after the first ":" or spaced dash (" - ", " – ", " — ") is the option list,
   the text before it the head ("Which chairman: 4th, 3rd, or 2nd?").
2. Lead-in: a leading "are you looking for / interested in / referring to / asking about", "do you
   mean / want to know (about)", "did you mean", "would you like to know (about)", optionally followed
   by "information on/about", is cut off; the rest is the option list (one conjunct = one option:
   "Do you mean the 2017 film?" offers one option).
3. A wh-question with a comma and an "or" after it ("Which one do you mean, the film or the book?"):
   the text after the first comma is the list. Any other question with " or " is a bare list.
   Anything else (e.g. "Which year are you interested in?") offers no options.
The list is split into conjuncts at commas and at the word "or" (never at "and": "series 7 and 8"
is one option). A conjunct's *core* is its content tokens minus the query's and the head's tokens
(repeating the query is not an option). With two or more conjuncts, in this order:
a. Ellipsis cut: if the last conjunct's core is longer than every other's, it is cut before its first
   preposition/relative/participle ("Indiana with an elephant mascot" -> Indiana; "of" does not cut a
   last conjunct: "the voice of the narrator"); symmetrically an over-long first conjunct is cut
   after its last one ("the genre of the film" -> film). No cut that would drop a number.
b. Number heads: when all other conjuncts are single numbers and the last starts with a number, the
   rest of the last is their shared head ("the third or the fifth season" -> 3, 5).
c. Shared frame: tokens every conjunct shares are dropped ("FIFA" in "2014 FIFA, or 2010 FIFA")
   unless that would empty one; numbers are never dropped (1989-1993 and 1993-2017 share a year).
Conjuncts whose core ends up empty (options that only repeat the query, "something else", "both")
and repeats are dropped. `Option.text` is the shortest span of the original words that covers the
core ("the actor in series 6" -> "actor in series 6").

Limits (on purpose; the `limit:` cases in tests/data/option_cases.yaml show them): two coordinations in
one question ("the date or edition of the wins in 2009, 2006, or 1980") are read as one flat list, so
a middle conjunct keeps its frame; options joined by "and" are not split; whole-clause options keep
all their content words; statements (no lead-in, no "or") offer no options, so a model that answers
instead of asking is judged by novel_content/PARENT, not here; Roman numerals are not numbers;
"play-off" does not meet "playoff"; stemming does not catch synonyms (that is the semantic check's
job, in racq.scoring.faithfulness).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache

from nltk.stem.porter import PorterStemmer

STOPWORDS = frozenset("""
a an the and or but nor if then than so as of in on at to for from by with without about into onto
over under between among through during before after since until upon via per within against
is are was were be been being am do does did doing done have has had having will would shall should
can could might must i me my mine you your yours he him his she her hers it its we us our they
them their theirs this that these those there here who whom whose which what when where why how
not no yes all any each every some such own same other very just also only too up down out off
s t ve ll re d m o y either both neither
""".split())

# Words of the question's frame: they never count as option content or as novel content.
FRAME_WORDS = frozenset("""
looking look interested interest want wanted know knowing mean meant referring refer asking ask
like info specific particular specifically exactly one ones else something anything
other others another both neither whichever regarding concerning details detail
""".split())

_ORDINALS = {w: str(i) for i, w in enumerate("zeroth first second third fourth fifth sixth seventh eighth ninth tenth "
                                   "eleventh twelfth thirteenth fourteenth fifteenth sixteenth seventeenth "
                                   "eighteenth nineteenth twentieth".split())}
_CARDINALS = {w: str(i) for i, w in enumerate("zero one two three four five six seven eight nine ten eleven twelve "
                                              "thirteen fourteen fifteen sixteen seventeen eighteen nineteen "
                                              "twenty".split()) if i >= 2}
_IRREGULAR = {"won": "win", "wrote": "write", "written": "write", "sang": "sing", "sung": "sing",
              "made": "make", "began": "begin", "begun": "begin", "held": "hold", "built": "build",
              "took": "take", "taken": "take", "got": "get", "gotten": "get", "went": "go", "gone": "go",
              "came": "come", "knew": "know", "known": "know", "gave": "give", "given": "give",
              "became": "become", "ran": "run", "led": "lead", "found": "find", "men": "man",
              "women": "woman", "children": "child", "people": "person", "seen": "see", "saw": "see",
              "shown": "show", "chose": "choose", "chosen": "choose", "fought": "fight", "sold": "sell",
              "bought": "buy", "thought": "think", "brought": "bring", "caught": "catch", "met": "meet",
              "left": "leave", "lost": "lose", "paid": "pay", "told": "tell", "wore": "wear", "drew": "draw",
              "drawn": "draw", "flew": "fly", "flown": "fly", "grew": "grow", "grown": "grow", "hung": "hang"}
_STEMMER = PorterStemmer()
_NUMBER = re.compile(r"^\d+(st|nd|rd|th|s)?$")
# Words at which an over-long first/last conjunct is cut (see rule in the docstring).
_BOUNDARY = frozenset("""
of in on at for from by with about during between into over under since after before as to via
that which who whom whose where when while written sung made won held built known released
directed produced played hosted involving including featuring starring located based
""".split())
_LEAD_IN = re.compile(
    r"^(?:(?:so|ok|okay|well|just to clarify|to clarify),?\s+)?"
    r"(?:are|were)\s+you\s+(?:(?:currently|actually|specifically)\s+)?"
    r"(?:looking\s+for|interested\s+in|referring\s+to|asking\s+(?:about|for)|talking\s+about|"
    r"searching\s+for|inquiring\s+about|curious\s+about)|"
    r"^(?:do|would)\s+you\s+(?:want|like|wish)\s+to\s+(?:know|learn|find\s+out)"
    r"(?:\s+(?:about|more\s+about|of|if|whether))?|"
    r"^(?:do|did)\s+you\s+mean|^(?:is|was)\s+(?:it|this|that)\s+about",
    re.I)
_INFO = re.compile(r"^(?:more\s+)?(?:information|info|details)\s+(?:on|about|regarding)\s+", re.I)
_SEPARATOR = re.compile(r"\s*(?:(?<!\d):(?!\d)|\s[-–—]\s)\s*")
_SPLIT = re.compile(r"\s*,\s*(?:or\s+|and/or\s+)?|\s+or\s+", re.I)
_WH = re.compile(r"^(?:which|what|who|whom|whose|when|where|how)\b", re.I)
_WORD = re.compile(r"[A-Za-z0-9]+(?:['’][A-Za-z]+)?")


def _full_range(m: re.Match) -> str:
    start, end = int(m.group(1)), int(m.group(2))
    full = start // 100 * 100 + end
    return f"{start}-{full if full > start else full + 100}"  # 1989-93 -> 1989-1993, 1999-00 -> 1999-2000


def _fold(text: str) -> str:
    text = text.replace("’", "'").replace("‘", "'").replace("“", '"').replace("”", '"')
    text = re.sub(r"\b(1[5-9]\d\d|20\d\d)\s*[-–]\s*(\d\d)\b", _full_range, text)
    return re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)


@lru_cache(maxsize=65536)
def norm_word(word: str) -> str:
    """One surface word -> its normalised token (see the module docstring)."""
    w = word.lower().replace("’", "'")
    w = re.sub(r"'s?$", "", w)
    w = w.replace("'", "")
    if w in _ORDINALS:
        return _ORDINALS[w]
    if w in _CARDINALS:
        return _CARDINALS[w]
    if _NUMBER.match(w):
        return re.sub(r"(st|nd|rd|th)$", "", w)
    w = _IRREGULAR.get(w, w)
    return _STEMMER.stem(w)


def words(text: str) -> list[str]:
    """Surface words of a text, in order (hyphenated parts split; numbers with separators joined)."""
    return _WORD.findall(_fold(text))


def norm_tokens(text: str) -> list[str]:
    return [norm_word(w) for w in words(text)]


def is_content(token: str) -> bool:
    return token not in STOPWORDS and token not in _FRAME_NORM and token != ""


def content_tokens(text: str) -> list[str]:
    return [t for t in norm_tokens(text) if is_content(t)]


def is_number(token: str) -> bool:
    return bool(_NUMBER.match(token))


_FRAME_NORM = frozenset(norm_word(w) for w in FRAME_WORDS) | FRAME_WORDS
# Stopwords are checked after normalisation too ("does" -> "doe" would otherwise pass).
STOPWORDS = STOPWORDS | frozenset(norm_word(w) for w in STOPWORDS)


@dataclass
class Option:
    text: str                       # shortest original span covering the core
    core: list[str]                 # normalised content tokens that make this option an option
    conjunct: str                   # the whole conjunct it came from
    head: str = ""                  # the question's frame around the list ("Which chairman")
    extra: dict = field(default_factory=dict)


def _cut(conj: str, last: bool) -> str:
    """Cut a first/last conjunct at a boundary word (see the docstring)."""
    ws = conj.split()
    # "of" starts a complement, not a new phrase, after the option ("the voice of the narrator").
    stops = _BOUNDARY - {"of"} if last else _BOUNDARY
    idx = [i for i, w in enumerate(ws) if re.sub(r"\W", "", w.lower()) in stops]
    if last:
        # first boundary that has a content word before it
        for i in idx:
            if any(is_content(norm_word(w)) for w in words(" ".join(ws[:i]))):
                return " ".join(ws[:i])
    else:
        for i in reversed(idx):
            if any(is_content(norm_word(w)) for w in words(" ".join(ws[i + 1:]))):
                return " ".join(ws[i + 1:])
    return conj


def _core(conj: str, query_tokens: set[str]) -> list[str]:
    return [t for t in content_tokens(conj) if t not in query_tokens]


def _span(conj: str, core: list[str]) -> str:
    keep = set(core)
    hits = [m for m in _WORD.finditer(conj) if norm_word(_fold(m.group())) in keep]
    return conj[hits[0].start():hits[-1].end()] if hits else ""


def split_question(question: str) -> tuple[str, str, str]:
    """(head, body, kind): the frame before the list, the list text, and which rule matched
    ('list', 'lead', 'wh-comma', 'bare' or 'none')."""
    q = _fold(question).strip().strip('"').rstrip("?.! ").strip()
    q = re.sub(r'["“”]', "", q)
    m = _SEPARATOR.search(q)
    if m and m.start() > 0 and q[m.end():].strip():
        return q[:m.start()].strip(), q[m.end():].strip(), "list"
    m = _LEAD_IN.match(q)
    if m:
        body = _INFO.sub("", q[m.end():].strip(" ,"))
        return q[:m.end()].strip(), body.strip(), "lead"
    if _WH.match(q) and "," in q:
        head, _, body = q.partition(",")
        if re.search(r"\bor\b", body, re.I):
            return head.strip(), body.strip(), "wh-comma"
    if re.search(r"\s+or\s+", q, re.I) and not _WH.match(q):
        return "", q, "bare"
    return q, "", "none"


def extract_options(question: str, query: str = "") -> list[Option]:
    """The options a clarifying question offers, per the rules in the module docstring."""
    head, body, kind = split_question(question)
    if not body:
        return []
    conjs = [c.strip(" ,;.'\"") for c in _SPLIT.split(body)]
    conjs = [re.sub(r"^(?:either|or)\s+", "", c, flags=re.I) for c in conjs if c.strip(" ,;.'\"")]
    if not conjs:
        return []
    qtok = set(norm_tokens(query)) | set(content_tokens(head))
    cores = [_core(c, qtok) for c in conjs]
    if len(conjs) >= 2:
        # Ellipsis: an over-long last/first conjunct carries the shared frame; cut it at a boundary.
        for pos, last in ((len(conjs) - 1, True), (0, False)):
            others = [len(c) for i, c in enumerate(cores) if i != pos and c]
            if others and len(cores[pos]) > max(others):
                cut = _cut(conjs[pos], last)
                kept = _core(cut, qtok)
                lost = set(cores[pos]) - set(kept)
                if cut != conjs[pos] and kept and not any(is_number(t) for t in lost):
                    conjs[pos], cores[pos] = cut, kept
        # "the third or the fifth season": numbers against a number plus a shared head noun.
        rest = [c for c in cores[:-1] if c]
        if rest and all(len(c) == 1 and is_number(c[0]) for c in rest) and len(cores[-1]) > 1 \
                and is_number(cores[-1][0]):
            cores[-1] = cores[-1][:1]
        nonempty = [set(c) for c in cores if c]
        shared = set.intersection(*nonempty) if len(nonempty) >= 2 else set()
        shared = {t for t in shared if not is_number(t)}  # 1989-1993, 1993-2017 share a year, not a frame
        if shared and all(set(c) - shared for c in cores if c):
            cores = [[t for t in c if t not in shared] for c in cores]
    out, seen = [], set()
    for conj, core in zip(conjs, cores):
        key = tuple(core)
        if not core or key in seen:
            continue
        seen.add(key)
        out.append(Option(text=_span(conj, core), core=core, conjunct=conj, head=head, extra={"rule": kind}))
    if len(out) < sum(1 for c in cores if c) and out:
        out[0].extra["repeated"] = True  # "the final or the final?": offered twice, counted once
    return out


def echoes_query(question: str, query: str) -> bool:
    """Whether the question offers the query itself as an option ("Do you mean who played wolverine?"):
    a conjunct with content words beyond the frame, every one of them the query's. extract_options
    drops such an option (repeating the query is not an option); the Explore card says it was there."""
    head, body, _ = split_question(question)
    if not body or not query:
        return False
    qtok, htok = set(norm_tokens(query)), set(content_tokens(head))
    for conj in _SPLIT.split(body):
        toks = [t for t in content_tokens(conj) if t not in htok]
        if toks and all(t in qtok for t in toks):
            return True
    return False


def repeats_option(question: str, query: str = "") -> bool:
    """Whether the question offers one option twice ("the rib steak, or the rib steak?"): a small
    model's degenerate clarification that no faithfulness check catches (the option may be supported)."""
    return any(o.extra.get("repeated") for o in extract_options(question, query))
