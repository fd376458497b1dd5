"""Speed of the miners and losses against pytorch-metric-learning's equivalents, forward + backward.

For B in 64, 128, 256, 512 (P×K batches, K = 4), embedding dim 128, each miner + loss combination
and each loss alone is timed per call (mine, loss, backward) beside pytorch-metric-learning's
equivalent, the two interleaved round by round in the same process so that load on the machine
hits both alike; the best (smallest) time of the rounds is reported — on a shared machine the
least-disturbed call is the most repeatable figure — with the ratio ours / PML. It also times
what reading the mining record costs. The table goes into the ``mining`` section of BENCHMARKS.md.

    .venv/bin/python benchmarks/mining.py [--quick] [--device cpu|cuda|all] [--threads 2] [--clock wall|cpu|both] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import torch

from _report import command_line, machine_description, write_section
from retrieval import losses, mining

MARGIN = 0.2
TEMPERATURE = 0.1
# A PML call slower than this is timed once after its warm-up (its lifted / NT-Xent losses take seconds).
SLOW_SECONDS = 1.0
# Fast calls are repeated until each side has run this long (at most MAX_ROUNDS rounds).
MIN_SECONDS = 0.3
MAX_ROUNDS = 400


def combinations() -> list[tuple[str, Callable, str, Callable | None]]:
    """(our name, make ours, PML's name, make PML's) — each maker returns f(x, labels) -> loss."""
    from pytorch_metric_learning import losses as pml_losses
    from pytorch_metric_learning import miners as pml_miners

    def ours_mined(strategy, loss):
        miner = mining.TripletMiner(strategy, MARGIN) if not strategy.startswith("pair-") else mining.PairMiner(strategy[5:], MARGIN)
        return lambda x, y: loss(x, y, miner(x, y))

    def pml_mined(miner, loss):
        return lambda x, y: loss(x, y, miner(x, y))

    triplet = lambda: losses.TripletMarginLoss(MARGIN)  # noqa: E731
    pml_triplet = lambda: pml_losses.TripletMarginLoss(margin=MARGIN)  # noqa: E731
    rows = []
    for strategy in ("all", "hard", "semihard", "easy"):
        rows.append((
            f"{strategy} + triplet",
            lambda s=strategy: ours_mined(s, triplet()),
            f'TripletMarginMiner("{strategy}") + TripletMarginLoss',
            lambda s=strategy: pml_mined(pml_miners.TripletMarginMiner(margin=MARGIN, type_of_triplets=s), pml_triplet()),
        ))
    rows.append((
        "batch-hard + triplet",
        lambda: ours_mined("batch-hard", triplet()),
        "BatchHardMiner + TripletMarginLoss",
        lambda: pml_mined(pml_miners.BatchHardMiner(), pml_triplet()),
    ))
    rows.append((
        "batch-semihard + triplet",
        lambda: ours_mined("batch-semihard", triplet()),
        'BatchEasyHardMiner("hard", "semihard") + TripletMarginLoss (closest: one positive per anchor)',
        lambda: pml_mined(pml_miners.BatchEasyHardMiner(pos_strategy="hard", neg_strategy="semihard"), pml_triplet()),
    ))
    rows.append((
        "pair-active + contrastive",
        lambda: ours_mined("pair-active", losses.ContrastiveLoss(MARGIN)),
        "PairMarginMiner(0, ε) + ContrastiveLoss(0, ε)",
        lambda: pml_mined(pml_miners.PairMarginMiner(pos_margin=0, neg_margin=MARGIN), pml_losses.ContrastiveLoss(pos_margin=0, neg_margin=MARGIN)),
    ))
    rows += [
        ("contrastive", lambda: losses.ContrastiveLoss(MARGIN), "ContrastiveLoss(0, ε)", lambda: pml_losses.ContrastiveLoss(pos_margin=0, neg_margin=MARGIN)),
        ("triplet (all triplets)", triplet, "TripletMarginLoss", pml_triplet),
        ("lifted structure", lambda: losses.LiftedStructureLoss(1.0), "LiftedStructureLoss(1, 0)", lambda: pml_losses.LiftedStructureLoss(neg_margin=1.0, pos_margin=0)),
        ("N-pair", lambda: losses.NPairLoss(), "NPairsLoss", lambda: pml_losses.NPairsLoss()),
        ("NCE", lambda: losses.NCELoss(TEMPERATURE), "(none)", None),
        ("InfoNCE", lambda: losses.InfoNCELoss(TEMPERATURE), "NTXentLoss", lambda: pml_losses.NTXentLoss(temperature=TEMPERATURE)),
    ]
    return rows


# The clock of the current pass: wall-clock seconds, or the CPU seconds of this thread (with
# torch on one thread, so that all the work is this thread's: robust to other work on a shared CPU).
CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}
clock = time.perf_counter


def call_seconds(fn, x, labels, device) -> float:
    x.grad = None
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = clock()
    fn(x, labels).backward()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return clock() - start


def measure(ours, theirs, x, labels, device, rounds: int) -> tuple[float, float | None]:
    """Best seconds per call of ours and theirs, interleaved round by round after a warm-up: at
    least ``rounds`` rounds, and more (up to MAX_ROUNDS) until each side has run MIN_SECONDS, so a
    burst of other work on a shared machine cannot spoil every sample of a fast call."""
    call_seconds(ours, x, labels, device)
    first = call_seconds(theirs, x, labels, device) if theirs is not None else None
    slow = first is not None and first > SLOW_SECONDS  # then that one call is its figure
    ours_t, theirs_t = [], [first] if slow else []
    i = 0
    while i < rounds or (i < MAX_ROUNDS and min(sum(ours_t), sum(theirs_t) if theirs_t and not slow else MIN_SECONDS) < MIN_SECONDS):
        ours_t.append(call_seconds(ours, x, labels, device))
        if theirs is not None and not slow:
            theirs_t.append(call_seconds(theirs, x, labels, device))
        i += 1
    return min(ours_t), (min(theirs_t) if theirs_t else None)


def record_cost(x, labels, device, rounds: int) -> list[str]:
    """Per strategy: mining + loss with the record read (20 hardest) vs with the record never read
    (it is computed lazily, so then it costs nothing)."""
    lines = []
    for strategy in mining.TRIPLET_STRATEGIES:
        with_record = mining.TripletMiner(strategy, MARGIN, hardest_k=20)
        without = mining.TripletMiner(strategy, MARGIN, hardest_k=0)
        loss = losses.TripletMarginLoss(MARGIN)
        read = lambda x, y: _read(with_record(x, y), loss, x, y)  # noqa: E731
        bare = lambda x, y: loss(x, y, without(x, y))  # noqa: E731
        a, b = measure(read, bare, x, labels, device, rounds)
        lines.append(f"| {strategy} | {b * 1e3:.2f} | {a * 1e3:.2f} | {(a - b) * 1e3:+.2f} |")
    return lines


def _read(mined, loss, x, labels):
    value = loss(x, labels, mined)
    mined.record.to_dict()  # counts, means and the 20 hardest as Python values
    return value


def run_device(device: torch.device, sizes: list[int], rounds: int, clock_name: str, threads: int) -> str:
    global clock
    clock = CLOCKS[clock_name]
    torch.set_num_threads(1 if clock_name == "cpu" else threads)
    title = f"{device.type.upper()}, " + (
        "CPU time of the calling thread, torch on 1 thread" if clock_name == "cpu" else f"wall clock, torch on {threads} threads"
    )
    torch.manual_seed(0)
    rows = combinations()
    cells: dict[str, list[str]] = {name: [] for name, *_ in rows}
    worst: list[tuple[float, str, int]] = []
    for batch in sizes:
        labels = torch.arange(batch // 4, device=device).repeat_interleave(4)
        x = torch.randn(batch, 128, device=device, requires_grad=True)
        for name, make_ours, _, make_theirs in rows:
            ours_s, theirs_s = measure(make_ours(), make_theirs() if make_theirs else None, x, labels, device, rounds)
            if theirs_s is None:
                cells[name].append(f"{ours_s * 1e3:.2f} / –")
            else:
                cells[name].append(f"{ours_s * 1e3:.2f} / {theirs_s * 1e3:.2f} ({ours_s / theirs_s:.2f}×)")
                worst.append((ours_s / theirs_s, name, batch))
            print(f"{device.type} {clock_name} B={batch} {name}: {cells[name][-1]}", flush=True)
    header = "| ours | PML equivalent | " + " | ".join(f"B={b}" for b in sizes) + " |"
    lines = [header, "|" + "---|" * (len(sizes) + 2)]
    for name, _, pml_name, _ in rows:
        lines.append(f"| {name} | {pml_name} | " + " | ".join(cells[name]) + " |")
    worst.sort(reverse=True)
    summary = f"Slowest ratio: {worst[0][0]:.2f}× ({worst[0][1]}, B={worst[0][2]})." if worst else ""
    batch = 256 if 256 in sizes else sizes[-1]
    labels = torch.arange(batch // 4, device=device).repeat_interleave(4)
    x = torch.randn(batch, 128, device=device, requires_grad=True)
    record = [
        f"Mining record cost at B={batch} (miner + triplet loss + backward, ms): the record never read (it is computed"
        " on first access, so then it is never computed), vs reading every field, the 20 hardest triplets included, as"
        " Python values, as training does every step.",
        "",
        "| strategy | no record | with record | difference |",
        "|---|---|---|---|",
        *record_cost(x, labels, device, rounds),
    ]
    return "\n".join([f"#### {title}", "", "Milliseconds per call, ours / PML (ours ÷ PML):", "", *lines, "", summary, "", *record])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="B = 64 and 256 only, fewer rounds")
    parser.add_argument("--device", default="all", choices=["cpu", "cuda", "all"], help="all: CPU, and CUDA when present")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads for wall-clock timings (the machine is shared)")
    parser.add_argument("--rounds", type=int, default=None, help="timed calls per item (default 15, --quick 5)")
    parser.add_argument(
        "--clock", default="both", choices=["wall", "cpu", "both"],
        help="CPU timings by wall clock (--threads threads), by the calling thread's CPU time (1 thread; steady on a"
        " shared machine), or both; CUDA is always timed by wall clock",
    )
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()
    sizes = [64, 256] if args.quick else [64, 128, 256, 512]
    rounds = args.rounds or (5 if args.quick else 15)
    devices = [torch.device("cpu")] if args.device in ("cpu", "all") else []
    if args.device in ("cuda", "all") and torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    elif args.device == "cuda":
        raise SystemExit("--device cuda: no CUDA device here")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    passes = [
        (device, name)
        for device in devices
        for name in (["wall"] if device.type == "cuda" or args.clock == "wall" else ["cpu"] if args.clock == "cpu" else ["wall", "cpu"])
    ]
    tables = [run_device(device, sizes, rounds, name, args.threads) for device, name in passes]
    load_end = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    torch.set_num_threads(args.threads)  # the machine line names the wall-clock passes' thread count
    import pytorch_metric_learning

    body = "\n".join([
        "### Miners and losses vs pytorch-metric-learning",
        "",
        f"Machine: {machine_description(devices[-1])}; pytorch-metric-learning {pytorch_metric_learning.__version__}.",
        f"Command: `{command_line()}`. Run at {time.strftime('%Y-%m-%d %H:%M')}; 1-minute load average {load:.1f} at the start,"
        f" {load_end:.1f} at the end (the CPU is shared: a load above {os.cpu_count()} means other work ran beside it).",
        f"P×K batches with K = 4, dim 128, margin {MARGIN}, temperature {TEMPERATURE}; forward + backward, best call of at least"
        f" {rounds} rounds and {MIN_SECONDS} s per side (at most {MAX_ROUNDS} rounds), ours and PML's interleaved; a PML call over"
        f" {SLOW_SECONDS:.0f} s is timed by that one call. On a CPU shared with other work, wall-clock figures of"
        " small calls are disturbed (a descheduled torch thread stalls a whole operation); the thread's CPU time"
        " on one thread is the steadier comparison.",
        "",
        *[t + "\n" for t in tables],
    ])
    print(body)
    if not args.no_write:
        write_section("mining", body)


if __name__ == "__main__":
    main()
