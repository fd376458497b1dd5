"""Training and gallery embedding across processes with PyTorch's own engine (``torchrun``, DDP).

``torchrun --nproc_per_node=N -m retrieval train …`` starts N processes; each joins a process
group (NCCL on CUDA, gloo on CPU) through :func:`process_group`, which reads the environment
torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``).
Launched without torchrun, everything here is a no-op and training is the single-process loop.

How a distributed run equals one process on the same global batch:

- **Data.** Every process builds the same P×K sampler with the same seed, so all see the same
  global batch; process r loads ``batch[r::N]`` (``training.seeded_items.KeyedBatches`` with ``shard``), with the
  per-item seeded augmentation of the global position, so its pixels are those one process sees.
- **Mining and losses see the global batch.** :meth:`DistributedContext.gather_batch` all-gathers
  the embeddings, labels and dataset indices and puts them back in the sampler's order; every
  process then mines and computes the loss on the whole batch (the same value everywhere), and
  the mining record names the right dataset indices.
- **Gradient scale.** The gather's backward all-reduces (sums) the gradient of the gathered
  matrix and returns each process its own rows: with identical losses L on N processes that is
  N · ∂L/∂e_local. DDP then *averages* the parameter gradients over processes, and
  (1/N) Σ_r N · ∂L/∂e_r · ∂e_r/∂θ = ∂L/∂θ: exactly one process's gradient on the global batch.
  (Without the factor N the model would learn N times slower; tests/test_distributed.py checks
  loss and gradients of every objective against one process.)
- **BatchNorm** is the exception: in training mode each process normalises with the statistics of
  its own share (B/N images) unless ``sync_bn`` (``--sync-bn``, CUDA only) converts the model to
  ``torch.nn.SyncBatchNorm``, which uses the global batch's statistics. Eval-mode BN (validation,
  indexing) is per image and identical. DDP broadcasts rank 0's buffers (running statistics) at
  every step, so the saved model carries rank 0's.

Only rank 0 writes (run directory, logs, checkpoints, the index); validation and gallery
embedding are sharded (:func:`retrieval.embed.embedding_batches`: each process embeds every N-th
batch, and all receive the rows in order, :meth:`DistributedContext.gather_rows`). Collectives time out after ``timeout_s``
(``--dist-timeout``); a failed or timed-out collective (another process died or hangs) becomes a
one-line :class:`~retrieval.errors.RetrievalError` naming the rank, instead of a hang.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from retrieval.errors import LostProcesses, RetrievalError
from retrieval.model import resolve_device

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "DistributedContext",
    "all_gather_with_grad",
    "is_main_process",
    "launched_by_torchrun",
    "process_group",
]

log = logging.getLogger("retrieval")

DEFAULT_TIMEOUT_S = 300.0
"""Seconds a collective waits for the other processes (``--dist-timeout``) before the run stops."""

_TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def launched_by_torchrun() -> bool:
    """Whether this process was started by ``torchrun`` (its rank variables are set)."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def is_main_process() -> bool:
    """Rank 0 of a torchrun launch, or a plain single process: the one that prints and writes."""
    return int(os.environ.get("RANK", "0")) == 0


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in the run: rank, world size, the device it computes on and the
    backend (``None`` for a single process, where every method is a cheap no-op)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    device: torch.device = torch.device("cpu")
    backend: str | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S

    @property
    def enabled(self) -> bool:
        """Whether a process group is in use (launched by torchrun)."""
        return self.backend is not None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def describe(self) -> dict[str, Any]:
        """What the run's ``config.json`` records under ``"distributed"``."""
        return {"world_size": self.world_size, "backend": self.backend}

    # -- checks and small collectives -----------------------------------------------------------

    def require_batch(self, batch_size: int) -> None:
        """Every process needs at least two images of each global batch (BatchNorm in training
        mode cannot normalise one); RetrievalError otherwise."""
        if self.enabled and batch_size < 2 * self.world_size:
            raise RetrievalError(
                f"a batch of {batch_size} images cannot be shared by {self.world_size} processes (each needs "
                f"at least 2): raise -P / -K to at least {2 * self.world_size} images per batch, or start fewer processes"
            )

    def any(self, flag: bool) -> bool:
        """True on every process when ``flag`` is true on any (e.g. a Ctrl-C seen by one)."""
        if not self.enabled:
            return bool(flag)
        value = torch.tensor([1 if flag else 0], device=self.device)
        torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
        return bool(value.item())

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()

    def loader_workers(self, requested: int | None) -> int | None:
        """Loader workers per process: as asked, else the CPUs of this host shared among its
        processes (None: the single-process default of :func:`retrieval.data.make_loader`)."""
        if requested is not None or not self.enabled:
            return requested
        try:
            cpus = len(os.sched_getaffinity(0))
        except AttributeError:
            cpus = os.cpu_count() or 1
        share = cpus // max(1, self.local_world_size)
        return 0 if share < 2 else min(8 if self.device.type == "cuda" else 2, share)

    # -- training ---------------------------------------------------------------------------------

    def wrap_model(self, model: torch.nn.Module, *, sync_bn: bool = False) -> Callable[[torch.Tensor], torch.Tensor]:
        """The training forward (images → unnormalised embeddings): ``model.forward_unnormalised``
        for one process, else the model wrapped in DistributedDataParallel (with SyncBatchNorm
        when ``sync_bn``). The model itself stays what is saved, validated and checkpointed."""
        if not self.enabled:
            return model.forward_unnormalised
        if sync_bn:
            if self.device.type != "cuda":
                raise RetrievalError(
                    "--sync-bn needs CUDA (torch's SyncBatchNorm runs on GPUs only); on CPU each process "
                    "normalises with the statistics of its own share of the batch"
                )
            torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)  # in place: same parameters and buffers
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(_UnnormalisedForward(model), device_ids=device_ids)  # broadcasts rank 0's buffers

    def gather_batch(
        self, embeddings: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The global batch from every process's share: (embeddings with gradients flowing back to
        this process's rows (see the module docstring for the scale), labels on the embeddings'
        device, dataset indices on the CPU), in the sampler's order when each process holds its
        full strided share ``batch[r::N]`` (else, after an unreadable image, in rank order)."""
        if not self.enabled:
            return embeddings, labels, indices
        sizes = self._sizes(len(embeddings))
        gathered = all_gather_with_grad(embeddings, sizes)
        meta = torch.stack([labels.to(self.device).long(), torch.as_tensor(indices).to(self.device).long()], dim=1)
        meta = _gather_rows(meta, sizes)
        order = _strided_order(sizes, self.world_size)
        if order is not None:
            order = order.to(self.device)
            gathered, meta = gathered[order], meta[order]
        return gathered, meta[:, 0], meta[:, 1].cpu()

    def _sizes(self, n: int) -> list[int]:
        local = torch.tensor([n], device=self.device, dtype=torch.long)
        out = [torch.zeros_like(local) for _ in range(self.world_size)]
        torch.distributed.all_gather(out, local)
        return [int(v) for v in torch.cat(out).tolist()]

    # -- embedding (validation, gallery index) -------------------------------------------------

    def gather_rows(self, rows: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Every process's (rows, ids) block concatenated in rank order, on every process (ids on
        the CPU); unchanged for a single process. :func:`retrieval.embed.embedding_batches` shares
        batches among the processes with it."""
        if not self.enabled:
            return rows, ids
        with torch.no_grad():
            sizes = self._sizes(len(ids))
            all_rows = _gather_rows(rows.to(self.device), sizes)
            all_ids = _gather_rows(torch.as_tensor(ids).to(self.device), sizes)
        return all_rows, all_ids.cpu()


# ----------------------------------------------------------------------------- joining the group


@contextlib.contextmanager
def process_group(device: str | torch.device = "auto", timeout_s: float = DEFAULT_TIMEOUT_S) -> Iterator[DistributedContext]:
    """The :class:`DistributedContext` of this process, for the duration of a ``with`` block.

    Under torchrun it joins the process group (NCCL when ``device`` resolves to CUDA, gloo
    otherwise; each process takes the GPU of its ``LOCAL_RANK``), and leaves it afterwards; when a
    group is already initialised (a script that set one up itself) it is used and left alone.
    Without torchrun it resolves ``device`` and yields a single-process context. Warnings of the
    ``retrieval`` logger are shown by rank 0 only. A collective that fails or times out inside
    the block (another process died or hangs) is raised as a one-line
    :class:`~retrieval.errors.LostProcesses` (a RetrievalError).
    """
    if not launched_by_torchrun() and not torch.distributed.is_initialized():
        yield DistributedContext(device=resolve_device(device) if isinstance(device, str) else torch.device(device))
        return
    if not torch.distributed.is_available():
        raise RetrievalError("launched by torchrun, but this PyTorch build has no torch.distributed")
    if not timeout_s > 0:
        raise RetrievalError(f"--dist-timeout must be positive, got {timeout_s}")
    rank = int(os.environ.get("RANK", "0"))
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size)))
    process_device = _process_device(device, local_rank, local_world_size)
    created = False
    if torch.distributed.is_initialized():
        rank, world_size = torch.distributed.get_rank(), torch.distributed.get_world_size()
        backend = str(torch.distributed.get_backend())
    else:
        missing = [name for name in _TORCHRUN_VARIABLES if name not in os.environ and name != "LOCAL_RANK"]
        if missing:
            raise RetrievalError(f"WORLD_SIZE is set but {', '.join(missing)} is not: start distributed runs with torchrun")
        backend = "nccl" if process_device.type == "cuda" else "gloo"
        if process_device.type == "cuda":
            torch.cuda.set_device(process_device)
        options: dict[str, Any] = {"backend": backend, "timeout": datetime.timedelta(seconds=float(timeout_s))}
        if process_device.type == "cuda":
            options["device_id"] = process_device
        try:
            torch.distributed.init_process_group(**options)
        except (torch.distributed.DistError, RuntimeError, ValueError) as error:
            raise RetrievalError(
                f"rank {rank} of {world_size}: could not join the process group at "
                f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')} within {timeout_s:g} s "
                f"({_first_line(error)}); check the --rdzv-endpoint / --master-addr and that every node started"
            ) from error
        created = True
    context = DistributedContext(rank, world_size, local_rank, local_world_size, process_device, backend, float(timeout_s))
    logger_level = log.level
    if rank != 0:
        log.setLevel(logging.ERROR)
    try:
        yield context
    except RuntimeError as error:
        if not _is_collective_failure(error):
            raise
        raise LostProcesses(
            f"rank {rank} of {world_size}: lost the other processes ({_first_line(error)}): one of them died, "
            f"failed or hangs (see its output; collectives wait {timeout_s:g} s, --dist-timeout). "
            f"--resume continues from the last checkpoint"
        ) from error
    finally:
        log.setLevel(logger_level)
        if created:
            with contextlib.suppress(Exception):
                torch.distributed.destroy_process_group()


def _process_device(device: str | torch.device, local_rank: int, local_world_size: int) -> torch.device:
    """The device of this process: ``auto`` / ``cuda`` become ``cuda:LOCAL_RANK``."""
    resolved = resolve_device(device) if isinstance(device, str) else torch.device(device)
    if resolved.type != "cuda":
        return resolved
    if resolved.index is None:
        index = local_rank
    elif local_world_size == 1:
        index = resolved.index
    else:
        raise RetrievalError(
            f"--device {device} under torchrun with {local_world_size} processes on this host: give --device cuda "
            f"(each process takes the GPU of its LOCAL_RANK; choose the GPUs with CUDA_VISIBLE_DEVICES)"
        )
    if index >= torch.cuda.device_count():
        raise RetrievalError(
            f"process {local_rank} on this host needs GPU {index}, but only {torch.cuda.device_count()} are visible: "
            f"start at most that many processes per node (--nproc_per_node)"
        )
    return torch.device("cuda", index)


def _is_collective_failure(error: RuntimeError) -> bool:
    """Whether an error comes from the process group (a peer died, hung or timed out) rather than
    from our own code: torch's Dist* errors, and gloo / NCCL errors raised as plain RuntimeError."""
    if isinstance(error, torch.distributed.DistError):
        return True
    text = str(error)
    return any(mark in text for mark in ("gloo", "NCCL", "ProcessGroup", "c10d"))


def _first_line(error: BaseException, limit: int = 200) -> str:
    """The error's first line without gloo's source location, at most ``limit`` characters."""
    lines = str(error).strip().splitlines()
    text = re.sub(r"^\[[^\]]*\]\s*", "", lines[0] if lines else "")
    return f"{type(error).__name__}: {text[:limit]}"


# ----------------------------------------------------------------------------- gathering


class _UnnormalisedForward(torch.nn.Module):
    """DDP hooks ``forward``; training needs ``forward_unnormalised`` (losses normalise themselves)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.forward_unnormalised(images)


class _AllGatherRows(torch.autograd.Function):
    """Concatenation of every process's rows; the backward sums the incoming gradient over the
    processes (all-reduce) and returns this process's rows of it."""

    @staticmethod
    def forward(ctx, local: torch.Tensor, sizes: list[int]) -> torch.Tensor:
        ctx.sizes = sizes
        ctx.rank = torch.distributed.get_rank()
        return _gather_rows(local, sizes)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous().clone()
        torch.distributed.all_reduce(grad, op=torch.distributed.ReduceOp.SUM)
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start : start + ctx.sizes[ctx.rank]], None


def all_gather_with_grad(local: torch.Tensor, sizes: Sequence[int] | None = None) -> torch.Tensor:
    """All processes' ``local`` rows concatenated in rank order (``sizes[r]`` rows from rank r;
    gathered first when not given), differentiable: the gradient reaching this process's rows is
    the sum over processes of the gradient each computes for them, i.e. N × its own when all N
    compute the same loss, which DDP's averaging turns back into the single-process gradient."""
    if sizes is None:
        local_size = torch.tensor([len(local)], device=local.device)
        out = [torch.zeros_like(local_size) for _ in range(torch.distributed.get_world_size())]
        torch.distributed.all_gather(out, local_size)
        sizes = [int(v) for v in torch.cat(out).tolist()]
    return _AllGatherRows.apply(local, list(sizes))


def _gather_rows(local: torch.Tensor, sizes: Sequence[int]) -> torch.Tensor:
    """all_gather of row blocks of unequal length (padded to the longest), concatenated."""
    longest = max(sizes)
    padded = local.new_zeros((longest, *local.shape[1:]))
    padded[: len(local)] = local.detach()
    parts = [torch.empty_like(padded) for _ in sizes]
    torch.distributed.all_gather(parts, padded.contiguous())
    return torch.cat([part[:size] for part, size in zip(parts, sizes)])


def _strided_order(sizes: Sequence[int], world_size: int) -> torch.Tensor | None:
    """The permutation that puts rank-ordered strided shares (rank r holds positions r, r+N, …)
    back in batch order; None when the sizes are not those of full strided shares."""
    total = sum(sizes)
    if any(size != len(range(rank, total, world_size)) for rank, size in enumerate(sizes)):
        return None
    positions = torch.cat([torch.arange(rank, total, world_size) for rank in range(world_size)])
    return torch.argsort(positions)
