"""Data-parallel training across processes: the process group, each rank's device, spawning ranks.

Two ways to start N training processes:

- ``train --nproc N`` (``ml.training.train(..., nproc=N)``): ``run_ranks`` spawns N local
  processes with torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``
  127.0.0.1, a free ``MASTER_PORT``); rank 0's progress events and result come back through a
  queue, the caller's cancel is handed on, a failing rank stops the others and its error is raised;
- ``torchrun --nproc-per-node N -m deeplab_studio train ...``: every process calls ``init_from_env``.

The backend is NCCL when the rank's device is a GPU (one GPU per process, ``cuda:LOCAL_RANK``), gloo
otherwise. ``DistContext`` holds a rank's place and the few collectives training needs; every rank
must call each of them at the same point of the run.
"""

from __future__ import annotations

import os
import pickle
import queue as queue_mod
import signal
import socket
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch import nn

from .cancel import is_cancelled
from .device import resolve_device
from .errors import DeviceError, TrainError

#: the environment torchrun gives every process (a process group is formed from it)
ENV_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistContext:
    """One rank of a running process group."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str

    @property
    def is_main(self) -> bool:
        """Rank 0 writes checkpoints, the resume state and progress."""
        return self.rank == 0

    def all_sum(self, value: torch.Tensor) -> torch.Tensor:
        """``value`` summed over the ranks (on this rank's device; ``value`` itself is left alone)."""
        out = value.detach().to(self.device).clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on any (a cancel all ranks agree on)."""
        return bool(self.all_sum(torch.tensor(int(bool(flag)), device=self.device)).item())

    def mean(self, value: float) -> float:
        """The mean of ``value`` over the ranks."""
        return float(self.all_sum(torch.tensor(float(value), dtype=torch.float64, device=self.device)).item()
                     ) / self.world_size

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` (picklable), in rank order."""
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        dist.barrier()


_current: DistContext | None = None


def launched_by_torchrun() -> bool:
    """Whether this process is one of several a launcher started (torchrun's environment is set)."""
    return all(k in os.environ for k in ENV_KEYS) and int(os.environ["WORLD_SIZE"]) > 1


def rank_device(name: str | torch.device, local_rank: int) -> torch.device:
    """The device of the rank with ``local_rank`` on its machine: ``cuda:LOCAL_RANK`` when ``name``
    resolves to CUDA without an index (one GPU per process), else the device ``name`` names."""
    try:
        device = resolve_device(name)
    except DeviceError as exc:
        raise TrainError(str(exc)) from None
    if device.type != "cuda" or device.index is not None:
        return device
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise TrainError(f"process {local_rank} of this machine has no GPU of its own ({count} GPU(s)); "
                         "start at most one process per GPU")
    return torch.device("cuda", local_rank)


def init_from_env(device: str | torch.device = "auto", *, timeout_s: float = 1800.0) -> DistContext:
    """Join the process group described by torchrun's environment (NCCL for a GPU, else gloo)."""
    global _current
    try:
        rank, world, local = (int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    except (KeyError, ValueError) as exc:
        raise TrainError(f"no usable process-group environment ({exc}); start with torchrun or --nproc") from None
    dev = rank_device(device, local)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        from datetime import timedelta

        dist.init_process_group(backend, init_method="env://", rank=rank, world_size=world,
                                timeout=timedelta(seconds=timeout_s), device_id=dev if dev.type == "cuda" else None)
    _current = DistContext(rank, world, local, dev, backend)
    return _current


def current() -> DistContext | None:
    """This process's rank when a process group of more than one process is running, else None."""
    if _current is not None and dist.is_available() and dist.is_initialized():
        return _current if _current.world_size > 1 else None
    return None


def shutdown() -> None:
    """Leave the process group (if any)."""
    global _current
    _current = None
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def wrap_model(model: nn.Module, ctx: DistContext, *, sync_bn: bool) -> nn.Module:
    """``model`` (already on ``ctx.device``) as a DistributedDataParallel module; with ``sync_bn``
    its BatchNorm layers become SyncBatchNorm first (statistics over every rank's batch; GPUs only,
    the layers keep their parameters and state-dict keys)."""
    from torch.nn.parallel import DistributedDataParallel

    if sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


# --- spawning local ranks ------------------------------------------------------------------
def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the rendezvous of local ranks)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _send(channel: Any, kind: str, value: Any) -> None:
    """Put ``(kind, value)`` on the parent's queue as plain pickle bytes: tensors travel by value
    (torch's queue would share their memory, which goes when the rank exits)."""
    channel.put((kind, pickle.dumps(value)))


class _Emit:
    """A rank's progress callback: sends ``("event", value)`` to the parent."""

    def __init__(self, channel: Any) -> None:
        self.channel = channel

    def __call__(self, value: Any) -> None:
        _send(self.channel, "event", value)


def _rank_main(local_rank: int, fn: Callable[..., Any], nproc: int, port: int, channel: Any, stop: Any,
               args: tuple) -> None:
    """A spawned rank: torchrun's environment, ``fn(emit, stop, *args)``, its result or error sent back."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent turns Ctrl-C into `stop`
    os.environ.update(RANK=str(local_rank), LOCAL_RANK=str(local_rank), WORLD_SIZE=str(nproc),
                      LOCAL_WORLD_SIZE=str(nproc), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // nproc))  # the cores shared out
    try:
        result = fn(_Emit(channel) if local_rank == 0 else None, stop, *args)
        if local_rank == 0:
            _send(channel, "result", result)
    except BaseException as exc:
        try:
            _send(channel, "error", exc)
        except Exception:  # noqa: BLE001 - an exception that does not pickle travels as its text
            _send(channel, "error", TrainError(f"rank {local_rank}: {type(exc).__name__}: {exc}"))
        raise
    finally:
        shutdown()


def run_ranks(fn: Callable[..., Any], nproc: int, args: tuple = (), *, on_event: Callable[[Any], None] | None = None,
              cancel: Any = None, poll_s: float = 0.1) -> Any:
    """Run ``fn(emit, stop, *args)`` in ``nproc`` spawned processes and return rank 0's result.

    ``fn`` (module-level, picklable with its arguments) joins the group with ``init_from_env``.
    ``emit`` is None on ranks other than 0; on rank 0 what it is given reaches ``on_event`` here.
    ``stop`` (``is_set()``) becomes set when ``cancel`` does. The first error a rank raises is
    raised here once every rank has stopped (torch ends the others when one fails).
    """
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    channel, stop = ctx.Queue(), ctx.Event()
    procs = mp.start_processes(_rank_main, args=(fn, nproc, free_port(), channel, stop, tuple(args)), nprocs=nproc,
                               join=False, start_method="spawn")
    result: Any = None
    errors: list[BaseException] = []

    def drain() -> None:
        nonlocal result
        while True:
            try:
                kind, raw = channel.get_nowait()
            except queue_mod.Empty:
                return
            value = pickle.loads(raw)
            if kind == "event" and on_event is not None:
                on_event(value)
            elif kind == "result":
                result = value
            elif kind == "error":
                errors.append(value)

    try:
        while True:
            drain()
            if is_cancelled(cancel):
                stop.set()
            try:
                if procs.join(timeout=poll_s):
                    break
            except Exception as exc:  # noqa: BLE001 - a rank failed; torch has ended the others
                time.sleep(poll_s)
                drain()
                raise (errors[0] if errors else TrainError(str(exc).strip().splitlines()[-1])) from None
        drain()
    finally:
        for p in procs.processes:
            if p.is_alive():
                p.terminate()
            p.join()
    return result
