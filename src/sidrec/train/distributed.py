"""The global batch under `accelerate launch` / torchrun: the configs give the batch of one optimiser step over all
processes; each process runs micro-batches and accumulates gradients until, together, they have covered it."""

from __future__ import annotations

import os

from sidrec.errors import SidrecError


def world_size() -> int:
    """Processes started by the launcher (`WORLD_SIZE`, which accelerate launch and torchrun set); 1 without one."""
    return max(1, int(os.environ.get("WORLD_SIZE", 1)))


def accumulation_steps(batch: int, micro: int, names: tuple[str, str], group: int = 1) -> int:
    """Gradient accumulation steps per process so that micro x processes x steps = `batch` (the global batch).

    `names`: the two settings, for the error; `group`: each process's share of the batch must hold whole groups of
    this size (RL: num_generations completions of one prompt)."""
    world = world_size()
    per_process = batch // world
    if batch % (micro * world) or per_process % group:
        need = f"a multiple of {names[1]}={micro} x {world} processes = {micro * world}"
        if group > 1:
            need += f", with whole groups of {group} on each process"
        raise SidrecError(f"{names[0]}={batch} is the global batch and must be {need}; change {names[0]} or "
                          f"{names[1]}, or the number of processes")
    return batch // (micro * world)
