"""CPU training-step speed of one backbone in fp32 / bf16 autocast, contiguous / channels_last.

Measures images/s of forward + backward + AdamW step on preloaded random tensors, the four
variants interleaved round by round so that load on the machine hits them alike. The fastest
variant is what ``--precision auto`` should pick on this CPU (retrieval.model.resolve_precision).

    python benchmarks/precision.py [--backbone resnet18] [--image-size 128] [--batch 64] [--rounds 5]
"""

from __future__ import annotations

import argparse
import time

import torch

from _report import command_line, machine_description, write_section
from retrieval.model import EmbeddingModel, cpu_supports_bf16


def step_time(model, optimiser, images, precision: str) -> float:
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        embeddings = model(images)
    loss = embeddings[:, 0].float().sum() - (embeddings[::2] * embeddings[1::2]).sum()
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    optimiser.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per variant per round")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    variants = [(p, cl) for p in ("fp32", "bf16") for cl in (False, True)]
    setups = {}
    for precision, channels_last in variants:
        model = EmbeddingModel(args.backbone, 128).train()
        images = torch.randn(args.batch, 3, args.image_size, args.image_size)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
            images = images.contiguous(memory_format=torch.channels_last)
        optimiser = torch.optim.AdamW(model.parameters(), lr=1e-4)
        step_time(model, optimiser, images, precision)  # warm-up
        setups[(precision, channels_last)] = (model, optimiser, images)
    times = {v: [] for v in variants}
    for _ in range(args.rounds):
        for v in variants:
            model, optimiser, images = setups[v]
            times[v] += [step_time(model, optimiser, images, v[0]) for _ in range(args.steps)]
    base = sorted(times[("fp32", False)])[len(times[("fp32", False)]) // 2]
    rows = []
    for v in variants:
        median = sorted(times[v])[len(times[v]) // 2]
        rows.append(f"| {v[0]} | {'channels_last' if v[1] else 'contiguous'} | {median * 1000:.0f} | {args.batch / median:.0f} | {base / median:.2f} |")
    body = "\n".join([
        "## CPU precision: training step of the backbone (benchmarks/precision.py)",
        "",
        f"Machine: {machine_description()}; CPU native bf16: {cpu_supports_bf16()}.",
        f"Command: `{command_line()}`. {args.backbone} at {args.image_size} px, batch {args.batch}, "
        f"forward + backward + AdamW on preloaded tensors, median of {args.rounds * args.steps} steps per variant.",
        "",
        "| precision | memory format | ms / step | images / s | speed-up vs fp32 contiguous |",
        "|---|---|---|---|---|",
        *rows,
    ])
    print(body)
    if not args.no_write:
        write_section("precision", body)


if __name__ == "__main__":
    main()
