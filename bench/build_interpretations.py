"""Build data/ambignq/interpretations.jsonl.gz: AmbigNQ's human interpretations of the PaQa and
CAmbigNQ queries (the usefulness reference of racq.scoring.usefulness).

    .venv/bin/python bench/build_interpretations.py --ambignq ../shared/data/ambignq/dev_light.json

Every PaQa test and CAmbigNQ dev query is an AmbigNQ dev question (matched by racq.data.normalise_query);
for each matched query one JSON line {key, id, question, annotations} is written, `annotations` holding
each `multipleQAs` annotation's qaPairs ({question, answer}) in AmbigNQ's order, unchanged. Queries of
AmbigNQ that no shipped record uses are left out. Output is gzip'd with a fixed mtime, so the same input
gives the same bytes.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from racq.data import load_examples, normalise_query  # noqa: E402
from racq.scoring.usefulness import INTERPRETATIONS_FILE  # noqa: E402


def build(ambignq: Path, out: Path, datasets=("paqa", "cambignq")) -> dict:
    wanted = {normalise_query(e.query) for e in load_examples(list(datasets))}
    rows, seen = [], set()
    for item in json.loads(Path(ambignq).read_text(encoding="utf-8")):
        key = normalise_query(item["question"])
        if key not in wanted or key in seen:
            continue
        seen.add(key)
        anns = [[{"question": qa["question"], "answer": qa["answer"]} for qa in a["qaPairs"]]
                for a in item["annotations"] if a["type"] == "multipleQAs"]
        rows.append({"key": key, "id": item["id"], "question": item["question"], "annotations": anns})
    out.parent.mkdir(parents=True, exist_ok=True)
    body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in sorted(rows, key=lambda r: r["key"]))
    with open(out, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9, mtime=0, filename="") as fh:
        fh.write(body.encode("utf-8"))
    return {"queries": len(wanted), "matched": len(rows), "unmatched": sorted(wanted - seen)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ambignq", type=Path, required=True, help="AmbigNQ light JSON (dev_light.json)")
    ap.add_argument("--out", type=Path, default=INTERPRETATIONS_FILE)
    args = ap.parse_args(argv)
    stats = build(args.ambignq, args.out)
    print(json.dumps({k: v if k != "unmatched" else len(v) for k, v in stats.items()}))
    if stats["unmatched"]:
        sys.exit(f"{len(stats['unmatched'])} queries have no AmbigNQ entry, e.g. {stats['unmatched'][0]!r}")


if __name__ == "__main__":
    main()
