"""Which process this is, under ``torchrun`` / ``accelerate launch`` (or none: a single process).

vlmdet does no distribution of its own — the trainer, accelerate and ``torch.distributed`` do the
work. Its own parts only need to know whether they are the process that writes files.
"""

from __future__ import annotations

import os


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
