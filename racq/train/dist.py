"""Rank helpers for training launched as several processes (`accelerate launch`, `torchrun`).

    accelerate launch --config_file recipes/accelerate/cpu-2proc.yaml -m racq.cli train sft --set max_steps=10

Rank 0 (the main process) alone writes files and the database: adapters, manifests, pairs files, run
records, rounds; the other ranks wait at a barrier and read what it wrote. A plain `racq train ...`
(no launcher: WORLD_SIZE unset or 1) never builds accelerate's PartialState here, so one process
behaves exactly as it did before these helpers existed: every helper is then a no-op or an identity.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator


def launched() -> bool:
    """Whether this process is one of several started by a launcher (torchrun / accelerate set WORLD_SIZE)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def state():
    """accelerate's PartialState, created on first use: the process group (gloo on CPU, NCCL on GPUs).

    On CPU it must be created with cpu=True, or PartialState would not take the MULTI_CPU (gloo) path;
    the Trainer later asks for the same state (TrainingArguments.use_cpu), so both agree."""
    import torch  # here, not at import: a single process never needs torch for these helpers
    from accelerate import PartialState
    from accelerate.utils import str_to_bool

    cpu = bool(str_to_bool(os.environ.get("ACCELERATE_USE_CPU", "false"))) or not torch.cuda.is_available()
    return PartialState(cpu=cpu)


def world_size() -> int:
    return state().num_processes if launched() else 1


def rank() -> int:
    return state().process_index if launched() else 0


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    """Every rank waits here until all ranks arrive (nothing to wait for in a single process)."""
    if launched():
        state().wait_for_everyone()


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first (writing a cache file, a run record); the others run it after,
    finding what it wrote. Unlike accelerate's main_process_first, rank 0 reaches the barrier even
    when its block raises, so the others do not hang: they run the block and meet the same error."""
    if not launched():
        yield
        return
    if not is_main():
        barrier()
        yield
        return
    try:
        yield
    finally:
        barrier()


def share(obj: Any = None) -> Any:
    """Rank 0's `obj`, on every rank (what the others pass is ignored): plans, paths, results."""
    if not launched():
        return obj
    from accelerate.utils import broadcast_object_list

    box = [obj if is_main() else None]
    broadcast_object_list(box, from_process=0)
    return box[0]


def gather(obj: Any) -> list:
    """Every rank's `obj`, in rank order, on every rank ([obj] in a single process)."""
    if not launched():
        return [obj]
    from accelerate.utils import gather_object

    return gather_object([obj])


def run_shape(batch_size: int, grad_accum: int) -> dict:
    """What a manifest records about the run's parallelism: ranks and the batch one optimizer step sees."""
    ws = world_size()
    return {"world_size": ws, "effective_batch": batch_size * grad_accum * ws}


def main_print(*args, **kw) -> None:
    """print on rank 0 only: a command's result once, not once per rank."""
    if is_main():
        print(*args, **kw)
