"""Distributed training check on GPUs (NCCL): is N processes the same as one process on the global batch?

    python tests/ddp_check.py                 # every visible GPU (1 GPU: NCCL world of 1, AMP)
    python tests/ddp_check.py --gpus 2 --out ddp_check.json
    python tests/ddp_check.py --device cpu    # the same checks with gloo on the CPU (a dry run)

Self-contained: it starts its own processes (the environment torchrun gives them) and, for the
end-to-end part, ``torchrun -m retrieval``. It prints one markdown table and, with ``--out``,
writes the rows as JSON. Exit status 1 when a check fails.

What it checks (W = number of processes = GPUs used):

1. **One step, every objective** (triplet+semihard, contrastive, lifted, npair, nce, infonce):
   resnet10t in float64 with eval-mode BatchNorm; W processes with DDP, each on ``batch[r::W]``
   of one 16-image P×K batch, gather the global batch (NCCL all-gather with gradients): loss and
   every parameter gradient must equal one process on the whole batch (relative 1e-9).
2. **BatchNorm in training mode**: with ``sync_bn`` (SyncBatchNorm, W >= 2, CUDA) the step must
   equal one process with training-mode BN; without it the difference is reported (per-process
   statistics: expected to differ when W >= 2).
3. **AMP**: the same step under bf16 and fp16 autocast (losses in float32), against one process
   under the same autocast: agreement to bf16 / fp16 rounding (relative 5e-2).
4. **End to end** on generated sample data (64 px, resnet10t): ``torchrun -m retrieval train``
   with W processes (``--sync-bn`` on CUDA with W >= 2, fp32) against one process: per-epoch loss
   and MAP@R (GPU kernels are not bit-deterministic: relative 1e-2); the same under bf16 and fp16
   (finite losses, a usable run); ``--resume`` across processes; ``torchrun -m retrieval index``
   against a one-process index (embeddings within bf16 rounding); images/s of both.
5. **A dead process**: W >= 2 processes, rank 1 exits, rank 0 then gathers: rank 0 must end
   (error or abort) within the timeout, not hang.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")

OBJECTIVES = ("triplet", "contrastive", "lifted", "npair", "nce", "infonce")
MARGIN = 0.5
P, K = 4, 4


# ----------------------------------------------------------------------------- processes


def _spawn(target, world: int, args: tuple, timeout: float) -> list[int | None]:
    from local_processes import run_local_processes

    return run_local_processes(target, *args, world_size=world, timeout=timeout)


# ----------------------------------------------------------------------------- one step


def _cases(device_type: str, world: int) -> list[dict]:
    cases = [{"name": f"{loss} fp64 eval-BN", "loss": loss, "dtype": "float64", "bn": "eval", "precision": "fp32",
              "tolerance": 1e-9} for loss in OBJECTIVES]
    if device_type == "cuda":
        cases.append({"name": "triplet fp64 train-BN --sync-bn", "loss": "triplet", "dtype": "float64", "bn": "sync",
                      "precision": "fp32", "tolerance": 1e-9})
    cases.append({"name": "triplet fp64 train-BN per process", "loss": "triplet", "dtype": "float64", "bn": "local",
                  "precision": "fp32", "tolerance": None})
    if device_type == "cuda":
        for precision in ("bf16", "fp16"):
            for loss in ("triplet", "infonce"):
                cases.append({"name": f"{loss} {precision} autocast eval-BN", "loss": loss, "dtype": "float32", "bn": "eval",
                              "precision": precision, "tolerance": 5e-2})
    else:
        cases.append({"name": "triplet bf16 autocast eval-BN", "loss": "triplet", "dtype": "float32", "bn": "eval",
                      "precision": "bf16", "tolerance": 5e-2})
    return cases


def _run_case(case, batch, device, forward_of, gather=None):
    """Loss and parameter gradients of one step (the model and its forward made by ``forward_of``)."""
    import torch

    from retrieval.model import EmbeddingModel, autocast
    from retrieval.training import TrainConfig, build_objective

    dtype = getattr(torch, case["dtype"])
    torch.manual_seed(0)
    model = EmbeddingModel("resnet10t", 16).to(device=device, dtype=dtype)
    model.train(case["bn"] != "eval")
    forward = forward_of(model, case)
    images, labels, indices = batch
    config = TrainConfig(data_dir=Path("."), out=Path("."), loss=case["loss"], margin=MARGIN, hardest_per_epoch=10)
    loss_fn, miner, _ = build_objective(config, None)
    with autocast(device, case["precision"]):
        embeddings = forward(images.to(device=device, dtype=dtype))
    embeddings = embeddings.to(dtype)
    labels = labels.to(device)
    if gather is not None:
        embeddings, labels, indices = gather(embeddings, labels, indices)
    mined = miner(embeddings, labels, indices) if miner is not None else None
    value = loss_fn(embeddings, labels, mined)
    value.backward()
    return float(value.detach()), {n: p.grad.detach().double().cpu() for n, p in model.named_parameters()}, indices.tolist()


def _step_worker(rank: int, device_type: str, batch_file: str, out_dir: str) -> None:
    import torch

    from retrieval import distributed

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    batch = torch.load(batch_file)
    results = {}
    with distributed.process_group(device_type, timeout_s=120) as ctx:
        share = slice(rank, None, ctx.world_size)
        local = tuple(t[share] for t in batch)
        for case in _cases(device_type, ctx.world_size):
            forward_of = lambda model, case: ctx.wrap_model(model, sync_bn=case["bn"] == "sync")
            results[case["name"]] = _run_case(case, local, ctx.device, forward_of, gather=ctx.gather_batch)
        results["_backend"] = ctx.backend
    torch.save(results, Path(out_dir) / f"rank{rank}.pt")


def check_steps(device_type: str, world: int, work: Path) -> list[dict]:
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    generator = torch.Generator().manual_seed(1)
    batch = (torch.randn(P * K, 3, 32, 32, generator=generator), torch.arange(P).repeat_interleave(K), torch.arange(500, 500 + P * K))
    torch.save(batch, work / "batch.pt")
    started = time.perf_counter()
    codes = _spawn(_step_worker, world, (device_type, str(work / "batch.pt"), str(work)), timeout=600)
    if codes != [0] * world:
        return [{"check": "one step (all cases)", "world": world, "ok": False, "detail": f"worker exit codes {codes}"}]
    ranks = [torch.load(work / f"rank{r}.pt") for r in range(world)]
    device = torch.device("cuda", 0) if device_type == "cuda" else torch.device("cpu")
    rows = []
    for case in _cases(device_type, world):
        loss, grads, _ = _run_case(case, batch, device, lambda model, case: model.forward_unnormalised)
        worst_loss, worst_grad, order_ok = 0.0, 0.0, True
        for results in ranks:
            d_loss, d_grads, d_indices = results[case["name"]]
            order_ok &= d_indices == batch[2].tolist()
            worst_loss = max(worst_loss, abs(d_loss - loss) / max(abs(loss), 1e-12))
            for name, g in grads.items():
                worst_grad = max(worst_grad, float((d_grads[name] - g).norm() / g.norm().clamp_min(1e-30)))
        tolerance = case["tolerance"]
        if tolerance is None:  # per-process BatchNorm statistics: report how far from one process
            ok = worst_grad > 1e-6 if world > 1 else worst_grad <= 1e-9
            expect = "differs (per-process BN statistics)" if world > 1 else "equal (one process)"
        else:
            ok = order_ok and worst_loss <= tolerance and worst_grad <= tolerance
            expect = f"equal within {tolerance:g}"
        rows.append({"check": f"one step: {case['name']}", "world": world, "ok": bool(ok),
                     "detail": f"loss rel diff {worst_loss:.1e}, worst gradient rel diff {worst_grad:.1e}; expected {expect}"})
    rows.append({"check": "one step: backend", "world": world, "ok": True,
                 "detail": f"{ranks[0]['_backend']}; {time.perf_counter() - started:.1f} s"})
    return rows


# ----------------------------------------------------------------------------- a dead process


def _dying_worker(rank: int, device_type: str, out_dir: str) -> None:
    import torch

    from retrieval import distributed

    started = time.monotonic()
    message = "no error"
    try:
        with distributed.process_group(device_type, timeout_s=30) as ctx:
            ctx.barrier()
            if rank == 1:
                os._exit(3)
            x = torch.zeros(2, 4, device=ctx.device, requires_grad=True)
            ctx.gather_batch(x, torch.zeros(2, dtype=torch.long), torch.arange(2))
            if ctx.device.type == "cuda":
                torch.cuda.synchronize()
    except Exception as error:  # noqa: BLE001 - we report whatever ends it
        message = f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"
    (Path(out_dir) / "dying.txt").write_text(f"{time.monotonic() - started:.1f}\n{message}")


def check_dead_process(device_type: str, world: int, work: Path) -> list[dict]:
    if world < 2:
        return []
    started = time.monotonic()
    codes = _spawn(_dying_worker, 2, (device_type, str(work)), timeout=150)
    seconds = time.monotonic() - started
    report = (work / "dying.txt").read_text().split("\n", 1) if (work / "dying.txt").exists() else ["-", "rank 0 was killed (aborted) before reporting"]
    ok = codes[0] is not None and codes[1] == 3
    return [{"check": "a dead process ends the run", "world": 2, "ok": ok,
             "detail": f"exit codes {codes} after {seconds:.0f} s (timeout 30 s); rank 0: {report[-1][:300]}"}]


# ----------------------------------------------------------------------------- end to end


def _retrieval(args: list[str], world: int | None, timeout: float = 900) -> subprocess.CompletedProcess:
    if world is None:
        command = [sys.executable, "-m", "retrieval", *args]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={world}",
                   "-m", "retrieval", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


def check_end_to_end(device_type: str, world: int, work: Path, epochs: int) -> list[dict]:
    import numpy as np

    from retrieval.sample_data import generate_sample_data

    data = work / "data"
    generate_sample_data(data, n_train_classes=16, n_test_classes=6, images_per_class=12, image_size=64)
    common = ["--backbone", "resnet10t", "--image-size", "64", "--embedding-dim", "64", "-P", "8", "-K", "4",
              "--epochs", str(epochs), "--device", device_type, "--quiet", "--hardest", "20", "--workers", "2"]
    rows = []

    def train(name, world_size, *extra):
        started = time.perf_counter()
        done = _retrieval(["train", str(data / "train"), "--out", str(work / name), *common, *extra], world_size)
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            rows.append({"check": f"train {name}", "world": world_size or 1, "ok": False,
                         "detail": f"exit {done.returncode}: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ''}"[:400]})
            return None
        return _metrics(work / name), seconds

    sync = ["--sync-bn"] if device_type == "cuda" and world > 1 else []
    one = train("one-fp32", None, "--precision", "fp32")
    many = train("ddp-fp32", world, "--precision", "fp32", *sync)
    if one and many:
        (m1, s1), (mw, sw) = one, many
        loss_diff = max(abs(a["loss"] - b["loss"]) / max(abs(b["loss"]), 1e-12) for a, b in zip(mw[1:], m1[1:]))
        map_diff = max(abs((a["map_at_r"] or 0) - (b["map_at_r"] or 0)) for a, b in zip(mw, m1))
        bn = "--sync-bn" if sync else ("per-process BN: not expected equal" if world > 1 else "")
        ok = loss_diff <= 1e-2 and map_diff <= 2e-2 if (sync or world == 1) else all(math.isfinite(r["loss"]) for r in mw[1:])
        rows.append({"check": f"train fp32, {world} processes vs 1 {bn}".strip(), "world": world, "ok": bool(ok),
                     "detail": f"epoch loss rel diff <= {loss_diff:.1e}, MAP@R diff <= {map_diff:.1e}; "
                               f"images/s last epoch {mw[-1]['images_per_second']:.0f} vs {m1[-1]['images_per_second']:.0f}; "
                               f"wall {sw:.0f} s vs {s1:.0f} s"})
    for precision in ("bf16", "fp16") if device_type == "cuda" else ("bf16",):
        result = train(f"ddp-{precision}", world, "--precision", precision, *sync)
        if result:
            metrics, seconds = result
            ok = all(math.isfinite(r["loss"]) for r in metrics[1:]) and (work / f"ddp-{precision}" / "model.safetensors").is_file()
            rows.append({"check": f"train {precision} autocast under torchrun", "world": world, "ok": bool(ok),
                         "detail": f"losses {[round(r['loss'], 4) for r in metrics[1:]]}; "
                                   f"images/s {metrics[-1]['images_per_second']:.0f}; {seconds:.0f} s"})
    # --resume across processes: one more epoch on the fp32 run
    if many:
        done = _retrieval(["train", str(data / "train"), "--out", str(work / "ddp-fp32"), "--epochs", str(epochs + 1),
                           "--device", device_type, "--workers", "2", "--quiet", "--resume"], world)
        epochs_logged = [r["epoch"] for r in _metrics(work / "ddp-fp32")]
        rows.append({"check": "--resume under torchrun", "world": world, "ok": done.returncode == 0 and epochs_logged[-1] == epochs + 1,
                     "detail": f"exit {done.returncode}; epochs logged {epochs_logged}"})
    # the gallery index: W processes embed, rank 0 builds; against one process on a copy of the run
    if one:
        copy = work / "one-fp32-copy"
        shutil.copytree(work / "one-fp32", copy)
        single = _retrieval(["index", str(work / "one-fp32"), str(data / "test"), "--device", device_type, "--quiet", "--json"], None)
        multi = _retrieval(["index", str(copy), str(data / "test"), "--device", device_type, "--quiet", "--json"], world)
        if single.returncode == 0 and multi.returncode == 0:
            a = np.load(work / "one-fp32" / "index" / "embeddings.npy")
            b = np.load(copy / "index" / "embeddings.npy")
            paths_equal = json.loads((work / "one-fp32" / "index" / "gallery.json").read_text())["items"] == \
                json.loads((copy / "index" / "gallery.json").read_text())["items"]
            diff = float(np.abs(a - b).max()) if a.shape == b.shape else math.inf
            one_json = multi.stdout.strip().count("\n") == 0
            rows.append({"check": "index under torchrun vs 1 process", "world": world, "ok": paths_equal and diff <= 2e-2 and one_json,
                         "detail": f"{len(a)} items, same paths {paths_equal}, max |diff| {diff:.1e} (bf16 autocast); one JSON line {one_json}"})
        else:
            rows.append({"check": "index under torchrun vs 1 process", "world": world, "ok": False,
                         "detail": (single.stderr + multi.stderr).strip()[-400:]})
    return rows


# ----------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--gpus", type=int, default=None, help="processes / GPUs to use (default: all visible)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs of the end-to-end runs")
    parser.add_argument("--skip-end-to-end", action="store_true")
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    parser.add_argument("--keep", type=Path, default=None, help="keep the work folder (runs, data) here")
    args = parser.parse_args()

    import torch

    if args.device == "cuda":
        available = torch.cuda.device_count()
        if available == 0:
            print("no CUDA device visible: run on a GPU machine, or use --device cpu for the gloo dry run", file=sys.stderr)
            return 2
        world = min(args.gpus or available, available)
        names = sorted({torch.cuda.get_device_name(i) for i in range(world)})
        where = f"{world} x {', '.join(names)}, torch {torch.__version__}, CUDA {torch.version.cuda}, NCCL {'.'.join(map(str, torch.cuda.nccl.version()))}"
    else:
        world = args.gpus or 2
        where = f"{world} CPU processes (gloo), torch {torch.__version__}"
    work = Path(tempfile.mkdtemp(prefix="ddp_check-")) if args.keep is None else args.keep
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    started = time.perf_counter()
    rows += check_steps(args.device, world, work)
    rows += check_dead_process(args.device, world, work)
    if not args.skip_end_to_end:
        rows += check_end_to_end(args.device, world, work, args.epochs)
    print(f"\n### Distributed check: {where}  ({time.perf_counter() - started:.0f} s)\n")
    print("| check | processes | ok | detail |\n|---|---|---|---|")
    for row in rows:
        print(f"| {row['check']} | {row['world']} | {'yes' if row['ok'] else '**NO**'} | {row['detail']} |")
    if args.out is not None:
        args.out.write_text(json.dumps({"where": where, "rows": rows}, indent=1) + "\n")
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if all(row["ok"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
