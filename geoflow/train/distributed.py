"""Multi-process training: the process group that ``torchrun`` describes, and the few collectives the trainer uses.

``torchrun --nproc_per_node N -m geoflow.cli train ...`` starts N processes and sets ``RANK``,
``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` in each; :func:`init_distributed`
reads them and joins the process group (gloo on CPU, nccl when CUDA is available).  Without
those variables it returns a single-process :class:`DistInfo` and touches nothing, so the plain
``geoflow train`` behaves exactly as before.
"""

from __future__ import annotations

import datetime
import os
import pickle
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.distributed as tdist

__all__ = ["DistInfo", "init_distributed", "close_distributed", "resolve_device", "BACKENDS"]

#: Accepted values of ``backend`` ("auto": nccl when CUDA is available, gloo otherwise).
BACKENDS = ("auto", "gloo", "nccl")

#: How long a process waits in a collective (rank 0 runs the validation and the test NLL alone
#: while the others wait, so this is generous).
DEFAULT_TIMEOUT = datetime.timedelta(hours=2)


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in a (possibly single-process) run.

    Attributes:
        rank: global rank (0 writes checkpoints, logs, metrics and plots).
        world_size: number of processes; the global batch is split into ``world_size`` equal shares.
        local_rank: rank on this node (selects the GPU under nccl).
        backend: "gloo" or "nccl" when a process group is in use, None otherwise.
        device: the process group's device (the CPU under gloo, ``cuda:LOCAL_RANK`` under nccl);
            for a single process the CPU, a placeholder: the trainer then trains on
            :attr:`TrainConfig.device <geoflow.train.TrainConfig>` (see :func:`resolve_device`).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        """True on rank 0, the process that writes and prints."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """True when a process group is in use (collectives are needed)."""
        return self.backend is not None

    # ----------------------------------------------------------- collectives
    def barrier(self) -> None:
        if self.enabled:
            tdist.barrier()

    def mean(self, x: torch.Tensor) -> torch.Tensor:
        """The mean of the scalar ``x`` over all processes (``x`` itself in a single process)."""
        if not self.enabled:
            return x
        y = x.detach().clone().reshape(1).to(self.device)
        tdist.all_reduce(y, op=tdist.ReduceOp.SUM)
        return (y / self.world_size).reshape(()).cpu()

    def gather(self, obj: Any) -> list:
        """``[obj of rank 0, obj of rank 1, ...]`` on every process (picklable objects)."""
        if not self.enabled:
            return [obj]
        out: list = [None] * self.world_size
        tdist.all_gather_object(out, obj)
        return out

    def run_on_main(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on rank 0 only and return its result on every process.

        The other processes wait (they receive the result by broadcast).  If ``fn`` raises on
        rank 0, every process raises the same exception (on the others it carries the attribute
        ``geoflow_relayed = True`` and a note), so no process is left waiting in a collective.
        """
        if not self.enabled:
            return fn()
        box: list = [None]
        error = None
        if self.is_main:
            try:
                box[0] = ("ok", fn())
            except Exception as exc:  # noqa: BLE001 - relayed to the other ranks, then re-raised
                error = exc
                try:
                    pickle.loads(pickle.dumps(exc))
                    box[0] = ("error", exc)
                except Exception:  # noqa: BLE001 - an exception that does not pickle
                    box[0] = ("error", RuntimeError(f"{type(exc).__name__}: {exc}"))
        tdist.broadcast_object_list(box, src=0)
        if error is not None:
            raise error
        kind, value = box[0]
        if kind == "error":
            value.geoflow_relayed = True
            value.add_note("(raised on rank 0 and relayed to this process)")
            raise value
        return value


def _env_int(name: str) -> int | None:
    v = os.environ.get(name)
    if v is None or v == "":
        return None
    try:
        return int(v)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {v!r}") from None


def init_distributed(backend: str = "auto", *, timeout: datetime.timedelta = DEFAULT_TIMEOUT) -> DistInfo:
    """Join the process group described by the ``torchrun`` environment, or run as one process.

    * No ``WORLD_SIZE`` in the environment: a single process; nothing is initialised.
    * A process group already initialised (by the caller): its rank and size are used.
    * Otherwise ``torch.distributed.init_process_group`` with ``init_method="env://"`` (reads
      ``MASTER_ADDR``, ``MASTER_PORT``, ``RANK``, ``WORLD_SIZE``).

    Args:
        backend: "auto" (nccl when CUDA is available, else gloo), "gloo" (CPU) or "nccl" (one GPU
            per process, ``cuda:LOCAL_RANK``).
        timeout: how long a collective may wait.

    Raises:
        ValueError: an unknown backend, "nccl" without CUDA, or an incomplete environment.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if tdist.is_available() and tdist.is_initialized():
        be = tdist.get_backend()
        local = _env_int("LOCAL_RANK") or 0
        device = torch.device("cuda", local) if be == "nccl" else torch.device("cpu")
        return DistInfo(rank=tdist.get_rank(), world_size=tdist.get_world_size(), local_rank=local, backend=be,
                        device=device)
    world = _env_int("WORLD_SIZE")
    if world is None:
        return DistInfo()
    rank, local = _env_int("RANK"), _env_int("LOCAL_RANK")
    if world < 1 or rank is None or not 0 <= rank < world:
        raise ValueError(f"WORLD_SIZE={world} is set but RANK={os.environ.get('RANK')!r} is not a rank in "
                         f"[0, {world}); launch with `torchrun --nproc_per_node N -m geoflow.cli train ...`")
    missing = [v for v in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(v)]
    if missing:
        raise ValueError(f"WORLD_SIZE is set but {' and '.join(missing)} not; launch with torchrun (it sets them)")
    if not tdist.is_available():
        raise ValueError("this torch build has no torch.distributed; run a single process (unset WORLD_SIZE)")
    local = 0 if local is None else local
    cuda = torch.cuda.is_available()
    if backend == "auto":
        backend = "nccl" if cuda and tdist.is_nccl_available() else "gloo"
    if backend == "nccl":
        if not cuda:
            raise ValueError("backend 'nccl' needs CUDA GPUs, and none is available; use 'gloo' (CPU)")
        if local >= torch.cuda.device_count():
            raise ValueError(f"LOCAL_RANK {local} has no GPU (this node has {torch.cuda.device_count()}); "
                             "start at most one process per GPU (--nproc_per_node)")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
        tdist.init_process_group("nccl", init_method="env://", rank=rank, world_size=world, timeout=timeout,
                                 device_id=device)
    else:
        device = torch.device("cpu")
        tdist.init_process_group("gloo", init_method="env://", rank=rank, world_size=world, timeout=timeout)
    return DistInfo(rank=rank, world_size=world, local_rank=local, backend=backend, device=device)


def resolve_device(device: str = "auto", dist: DistInfo | None = None, *, name: str = "device") -> torch.device:
    """The torch device that ``device`` (a :attr:`TrainConfig.device <geoflow.train.TrainConfig>` string) names here.

    * One process (``dist`` None or without a process group): "auto" is ``cuda:0`` when CUDA is
      available and the CPU otherwise; "cpu"; "cuda" is ``cuda:0``; "cuda:N" the N-th GPU.
    * Under a process group (``torchrun``): the group's device, ``dist.device`` (gloo: the CPU,
      nccl: ``cuda:LOCAL_RANK``).  "auto" follows it; an explicit device must name the same one
      ("cuda" matches any ``cuda:LOCAL_RANK``), otherwise ``ValueError``: "cpu" under nccl is
      refused rather than honoured (nccl's collectives need CUDA tensors), and so is "cuda"
      under gloo (launch with ``--backend nccl`` to train on GPUs).

    Raises:
        ValueError: a malformed string, "cuda" without CUDA, a GPU index this machine lacks, or
            a device other than the process group's (the message names ``name``).
    """
    from .config import check_device_string

    check_device_string(device, name)
    if dist is not None and dist.enabled:
        own = dist.device
        if device == "auto" or device == str(own) or (device == "cuda" and own.type == "cuda"):
            return own
        hint = ("nccl runs every process on its own GPU, cuda:LOCAL_RANK" if dist.backend == "nccl"
                else "gloo trains on the CPU; launch with --backend nccl to train on GPUs")
        raise ValueError(f"{name} {device!r} differs from this process's device {own} under torchrun "
                         f"(backend {dist.backend}: {hint}); pass --device auto (or omit it)")
    if device == "auto":
        return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    if device == "cpu":
        return torch.device("cpu")
    index = 0 if device == "cuda" else int(device.split(":", 1)[1])
    if not torch.cuda.is_available():
        raise ValueError(f"{name} {device!r} needs a CUDA GPU, and torch sees none (torch {torch.__version__}, "
                         f"built with CUDA {torch.version.cuda}); use --device cpu or --device auto")
    count = torch.cuda.device_count()
    if index >= count:
        raise ValueError(f"{name} {device!r} names GPU {index}, but this machine has {count} "
                         f"(cuda:0{'' if count == 1 else f' to cuda:{count - 1}'}); use --device cuda or --device auto")
    return torch.device("cuda", index)


def close_distributed() -> None:
    """Leave the process group (if one is initialised)."""
    if tdist.is_available() and tdist.is_initialized():
        tdist.destroy_process_group()
