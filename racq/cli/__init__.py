"""The `racq` command. Every command's help ends with an example you can paste.

One module per command group: ask.py (ask, index, data, models, config), training.py (train, pairs),
annotation.py (pool, export, rate, users, app), evaluation.py (eval), serving.py (vllm).

    racq ask "who won the world rapid chess championship in 2017"
    racq --help
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import warnings  # noqa: E402

# Library deprecation chatter is for developers, not for someone asking a question.
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=UserWarning, module="peft")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

# the app, its groups and options live in racq.cli.common (the command modules import them from there);
# re-exported here because `from racq.cli import app` is how tests and scripts reach the command
from racq.cli.common import app  # noqa: E402,F401

# the command modules add their commands to the apps in racq.cli.common; this order is the order of `racq --help`
from racq.cli import ask, training, annotation, evaluation, serving  # noqa: E402,F401,I001


def main():
    app()
