"""Serve the RACQ app on http://127.0.0.1:7860 (Explore, Annotate, Leaderboard, Feedback).

    python app.py                                   # or: make demo
    python app.py --port 7861 --db /tmp/racq.db
    python app.py --config my-app.yaml --set users_file=annotations/users.yaml
    python app.py --study annotations/study.example.yaml    # one study = one YAML + one database
    python app.py --index mine                      # your own corpus (racq index build --passages ... --name mine)

--config takes a YAML file of racq.ui.AppConfig settings; --set key=value overrides any of them.
--study takes a study file (racq.study.StudyConfig: guidelines, skip reasons, button labels, overlap,
reveal_after_vote, its database); a bad one stops here with every problem named, before any server.
The app binds 127.0.0.1 unless --host says otherwise; --share (a public Gradio link) is off by default.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, help="port (default 7860)")
    p.add_argument("--host", help="interface to bind (default 127.0.0.1)")
    p.add_argument("--db", help="annotation database file (default annotations/racq.db)")
    p.add_argument("--config", help="YAML file of AppConfig settings")
    p.add_argument("--study", help="study file (YAML of racq.study.StudyConfig settings)")
    p.add_argument("--index", help="a named index of your own corpus (racq index list); default: the shipped one")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a setting")
    p.add_argument("--share", action="store_true", help="also open a public Gradio share link")
    args = p.parse_args(argv)

    from racq.config import load_config
    from racq.ui import AppConfig, apply_study, launch

    overrides = list(args.set)
    for key in ("port", "host", "db", "study", "index"):
        if getattr(args, key) is not None:
            overrides.append(f"{key}={getattr(args, key)}")
    if args.share:
        overrides.append("share=true")
    try:
        cfg = load_config(AppConfig, args.config, overrides)
        apply_study(cfg)  # a bad study file fails here, with its file and keys, not as a traceback later
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    launch(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
