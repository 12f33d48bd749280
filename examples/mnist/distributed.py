"""Several processes, one run: each joins the others before touching a device, then trains
on its own devices' share of every batch (see ``train.Trainer``)."""

from __future__ import annotations

import os

import jax


def env_int(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value else None


def start_processes(coordinator: str | None, num_processes: int | None,
                    process_id: int | None) -> None:
    """Joins the other processes of a multi-process run (``jax.distributed.initialize``),
    before anything touches a device. On CPUs their collectives go through gloo."""
    given = [coordinator, num_processes, process_id]
    if all(v is None for v in given):
        return
    if any(v is None for v in given):
        raise ValueError("several processes need --coordinator, --num-processes and "
                         "--process-id (or $JAX_COORDINATOR_ADDRESS, $JAX_NUM_PROCESSES and "
                         "$JAX_PROCESS_ID) together")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator, num_processes=num_processes, process_id=process_id)
