"""python -m racq.cli ... (used by `accelerate launch -m racq.cli train sft`)."""

from racq.cli import main

main()
