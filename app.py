"""Serve the RACQ app on http://127.0.0.1:7860 (Explore, Annotate, Leaderboard, Feedback).

    python app.py                                   # or: make demo; the same as `racq app`
    python app.py --port 7861 --db /tmp/racq.db
    python app.py --config my-app.yaml --set users_file=annotations/users.yaml
    python app.py --study annotations/study.example.yaml    # one study = one YAML + one database
    python app.py --index mine                      # your own corpus (racq index build --passages ... --name mine)

This file is `racq app` under another name (racq/cli/annotation.py holds the command, its options and its
checks): `python app.py --help` lists them. A bad study file or setting stops with exit code 2, before any server.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def main(argv: list[str] | None = None) -> int:
    """Run `racq app ARGV`; returns its exit code."""
    from racq.cli import app

    args = list(sys.argv[1:] if argv is None else argv)
    return app(["app", *args], prog_name="app.py", standalone_mode=False) or 0


if __name__ == "__main__":
    sys.exit(main())
