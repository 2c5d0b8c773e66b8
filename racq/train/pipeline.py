"""The whole RAC chain, resumable: sft -> uncond -> pairs -> dpo (adapter `aligned`).

    racq train all --config recipes/cpu-default.yaml          # what produced the shipped adapters
    racq train all --set t1_limit=16 --set t2_limit=8 --set max_steps=2   # a smoke run

`runs/<name>/state.json` records each finished step; a killed run skips finished steps, and the
step it died in resumes from its last Trainer checkpoint (or, for pairs, its last written example).

Under a launcher every rank runs every step (the Trainer steps on their share of each batch, pairs on
their share of the batches) and rank 0 alone writes state.json:
    accelerate launch --config_file recipes/accelerate/cpu-2proc.yaml -m racq.cli train all --set max_steps=2
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from tqdm import tqdm

from racq.config import TrainConfig
from racq.train import dist

STEPS = ("sft", "uncond", "pairs", "dpo")

# Test hook, not a user setting: with RACQ_TEST_KILL_AFTER=<step>, train_all SIGKILLs its own process
# right after <step>'s state is written (state.json replaced), so tests/test_train.py can kill the chain
# at a known point instead of racing a poll against the training. Unset (always, outside tests): no effect.
KILL_AFTER_ENV = "RACQ_TEST_KILL_AFTER"


def _state_path(cfg: TrainConfig) -> Path:
    return Path(cfg.run_dir) / "state.json"


def read_state(cfg: TrainConfig) -> dict:
    path = _state_path(cfg)
    if not path.exists():
        return {"finished": {}}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:  # torn by a kill mid-write (we write atomically, but be safe)
        return {"finished": {}}


def _mark(cfg: TrainConfig, step: str, info: dict) -> None:
    if not dist.is_main():  # rank 0 alone records a step (its info is every rank's: same step, same result)
        return
    state = read_state(cfg)
    state["finished"][step] = {"at": time.strftime("%Y-%m-%dT%H:%M:%S"), **info}
    path = _state_path(cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2, default=str))
    tmp.replace(path)


def run_step(cfg: TrainConfig, step: str) -> dict:
    if step == "sft":
        from racq.train.sft import train_sft
        return {"adapter": str(train_sft(cfg))}
    if step == "uncond":
        from racq.train.sft import train_sft
        return {"adapter": str(train_sft(cfg, query_only=True))}
    if step == "pairs":
        from racq.train.pairs import build_pairs
        return build_pairs(cfg)
    if step == "dpo":
        from racq.train.dpo import train_dpo
        return {"adapter": str(train_dpo(cfg))}
    raise ValueError(f"unknown step {step!r}; steps: {', '.join(STEPS)}")


def train_all(cfg: TrainConfig, steps=STEPS, log=print) -> dict:
    """Run the missing steps in order; return the state."""
    from racq.train.common import check_run_data

    check_run_data(cfg)  # finished steps of a run on other data must not be skipped as if they were this one's
    done = dist.share(read_state(cfg)["finished"])  # rank 0's view: every rank runs the same steps
    log = log if dist.is_main() else (lambda *_: None)  # one log, not one per rank
    with tqdm(total=len(steps), desc="train all", unit="step", position=0, disable=not dist.is_main()) as bar:
        for step in steps:
            if step in done:
                log(f"[racq] {step}: already finished at {done[step]['at']}, skipped")
            else:
                log(f"[racq] {step}: starting")
                t = time.time()
                info = run_step(cfg, step)
                _mark(cfg, step, {**info, "seconds": round(time.time() - t, 1)})
                log(f"[racq] {step}: finished in {time.time() - t:.0f} s")
                if os.environ.get(KILL_AFTER_ENV) == step:  # test hook, see KILL_AFTER_ENV
                    os.kill(os.getpid(), signal.SIGKILL)
            bar.update(1)
    dist.barrier()  # rank 0 has written the last step's state before any rank reads it
    return read_state(cfg)
