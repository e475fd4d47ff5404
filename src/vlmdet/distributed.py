"""Which process this is and how the processes meet, under ``torchrun`` / ``accelerate launch`` (or a
single process). vlmdet does no distribution of its own: accelerate sets the processes up
(``PartialState``, the same state the Trainer uses) and ``torch.distributed`` carries the messages.
vlmdet's own parts only need to know who writes files, to let the main process prepare shared
files first, and to split its own evaluation work and gather the results.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
from collections.abc import Iterator, Sequence
from typing import Any


def launched() -> bool:
    """Started by a launcher with more than one process (``WORLD_SIZE`` > 1)?"""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def state():
    """accelerate's process state, initialising the process group from the launcher's environment
    (gloo on CPU, NCCL on GPUs) the first time under a launcher. On a CPU-only machine accelerate
    must be told (``cpu=True``, as the Trainer does with ``use_cpu``), or under torchrun every process
    would believe it is the only one."""
    import torch
    from accelerate import PartialState

    process_state = PartialState(cpu=not torch.cuda.is_available())
    if launched():
        _close_at_exit()
    return process_state


@functools.cache
def _close_at_exit() -> None:
    """Register :func:`close` to run at exit, once per process."""
    atexit.register(close)


def close() -> None:
    """Close the process group before the interpreter exits (torch asks for it: "destroy_process_group()
    was not called before program exit"). Left to interpreter shutdown, the group's threads can be torn
    down while still joinable, and a process that had finished its work aborts ("terminate called
    without an active exception", exit -6) — seen in a 2-process run on a loaded 2-core machine."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def rank() -> int:
    """This process's global rank (0 without a launcher)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """True on the one process that writes files and prints (rank 0)."""
    return rank() == 0


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """The main process runs the block first (e.g. writes the synthetic data), then the others (which
    then find it written). A plain block in a single process."""
    if not launched():
        yield
        return
    with state().main_process_first():
        yield


def gather(items: Sequence[Any]) -> list[Any]:
    """Every process's ``items``, concatenated in rank order, on every process."""
    if world_size() <= 1:
        return list(items)
    from accelerate.utils import gather_object

    return list(gather_object(list(items)))
