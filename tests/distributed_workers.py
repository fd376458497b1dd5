"""Helpers for tests/test_distributed.py: start N local processes with the environment torchrun
gives them (gloo on CPU) and the functions they run. A module of its own so that spawned
processes can import the functions by name."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable


def run_processes(target: Callable[..., Any], *args: Any, world_size: int = 2, timeout: float = 120.0) -> list[int | None]:
    """Run ``target(rank, *args)`` in ``world_size`` spawned processes, as torchrun would, one
    thread each and nothing downloaded; returns their exit codes (None: killed after ``timeout``)."""
    from local_processes import run_local_processes

    return run_local_processes(target, *args, world_size=world_size, timeout=timeout,
                               environment={"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}, threads=1)


def freeze_batchnorm() -> None:
    """Keep every BatchNorm in eval mode (running statistics, per image) even in model.train():
    the one layer whose training-mode output depends on how the batch is split."""
    import torch

    torch.nn.modules.batchnorm._BatchNorm.train = lambda self, mode=True: torch.nn.Module.train(self, False)


# ----------------------------------------------------------------------------- what the processes run


def session_worker(rank: int, out_dir: str, batch_file: str, losses: list[str], margin: float,
                   runs: list[tuple[dict, int | None]], gallery: str) -> None:
    """Everything the tests need from 2 processes, in one process group (starting processes is
    the slow part): the gather's gradient scale, one step of each objective, training runs and an
    index; then rank 1 dies (exit code 3) and rank 0 writes what its next gather reports
    (``dying_rank0.txt``: seconds, message) and leaves at once, as the CLI does."""
    import torch

    from retrieval import distributed
    from retrieval.errors import LostProcesses

    message, started = "no error", time.monotonic()
    try:
        with distributed.process_group("cpu", timeout_s=60) as ctx:  # train() and build_index join this group
            gradient_scale_check(ctx, out_dir)
            step_checks(ctx, out_dir, batch_file, losses, margin)
            train_runs(ctx, runs, gallery)
            ctx.barrier()
            if rank == 1:
                os._exit(3)
            started = time.monotonic()
            ctx.gather_batch(torch.zeros(2, 4, requires_grad=True), torch.zeros(2, dtype=torch.long), torch.arange(2))
    except LostProcesses as error:  # what process_group makes of the failed collective
        message = str(error)
    (Path(out_dir) / "dying_rank0.txt").write_text(f"{time.monotonic() - started:.1f}\n{message}")
    # as the CLI leaves after LostProcesses: torch's teardown may abort once a peer died
    # (retrieval.errors.LostProcesses), which would turn this exit code into -6
    os._exit(0)


def gradient_scale_check(ctx, out_dir: str) -> None:
    """x_r (2 rows on rank 0, 1 row on rank 1) gathered; loss = sum(w * gathered), the same on
    every rank: the gradient reaching x_r is world_size * w[rows of r]."""
    import torch

    from retrieval import distributed

    x = torch.full((2 - ctx.rank, 3), float(ctx.rank + 1), requires_grad=True)
    gathered = distributed.all_gather_with_grad(x)
    weights = torch.arange(gathered.numel(), dtype=torch.float32).reshape(gathered.shape)
    (gathered * weights).sum().backward()
    torch.save({"gathered": gathered.detach(), "grad": x.grad, "world_size": ctx.world_size},
               Path(out_dir) / f"scale_rank{ctx.rank}.pt")


def step_checks(ctx, out_dir: str, batch_file: str, losses: list[str], margin: float) -> None:
    """One training step of every objective on this rank's share batch[rank::N], with DDP and the
    cross-process gather; saves loss, parameter gradients (after DDP's averaging), the gathered
    dataset indices and the mining record's hardest triplets (``step_rank{r}.pt``)."""
    import torch

    from retrieval.model import EmbeddingModel
    from retrieval.training import TrainConfig, build_objective

    batch = torch.load(batch_file)
    share = slice(ctx.rank, None, ctx.world_size)
    images, labels, indices = batch["images"][share], batch["labels"][share], batch["indices"][share]
    results = {}
    for loss_name in losses:
        torch.manual_seed(0)
        model = EmbeddingModel("resnet10t", 16).double()  # float64: rounding differences stay ~1e-15
        model.eval()  # BatchNorm with running statistics: per image, the same however the batch is split
        forward = ctx.wrap_model(model)
        config = TrainConfig(data_dir=Path("."), out=Path("."), loss=loss_name, margin=margin, hardest_per_epoch=10)
        loss_fn, miner, record_miner = build_objective(config, None)
        embeddings = forward(images.double())
        embeddings, all_labels, all_indices = ctx.gather_batch(embeddings, labels, indices)
        mined = miner(embeddings, all_labels, all_indices) if miner is not None else None
        value = loss_fn(embeddings, all_labels, mined)
        value.backward()
        record = (mined if mined is not None else record_miner(embeddings.detach(), all_labels, all_indices)).record
        results[loss_name] = {
            "loss": float(value.detach()),
            "grads": {name: p.grad.detach().clone() for name, p in model.named_parameters()},
            "indices": all_indices.tolist(),
            "labels": all_labels.tolist(),
            "hardest": record.hardest,
        }
    torch.save(results, Path(out_dir) / f"step_rank{ctx.rank}.pt")


def train_runs(ctx, runs: list[tuple[dict, int | None]], gallery: str) -> None:
    """``retrieval.training.train(TrainConfig(**values))`` for each (values, stop_after) in turn, with
    BatchNorm frozen so that the run can be compared with one process. ``stop_after``: rank 0
    presses Ctrl-C (SIGINT) once that epoch is written; every process must then stop. Then the
    processes build the last run's index of ``gallery`` together."""
    import signal

    from retrieval.index import build_index
    from retrieval.training import TrainConfig, train

    freeze_batchnorm()

    def press_ctrl_c_after(epoch):
        return lambda row: signal.raise_signal(signal.SIGINT) if row["epoch"] == epoch else None

    for values, stop_after in runs:
        result = train(TrainConfig(**values), progress=False, on_epoch=press_ctrl_c_after(stop_after) if stop_after else None)
        assert result.interrupted == bool(stop_after), (ctx.rank, result.interrupted)
    build_index(runs[-1][0]["out"], gallery, device="cpu", num_workers=0, batch_size=4)
