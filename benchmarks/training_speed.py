"""Is the training step starved by data loading or slowed by mining?

Compares, in one run on the same machine, images/s of

- **limit**: forward + backward + AdamW step of the same backbone (and head) on a preloaded batch
  of random tensors, in the precision training uses: nothing but the model's own compute;
- **training**: ``retrieval train``'s whole loop (loader workers decoding and augmenting real
  images, P×K sampling, semihard mining with its record, triplet loss, optimiser, mining log),
  read from metrics.jsonl (training steps only, validation excluded), last epoch.

The ratio training / limit is the goal (≥ 0.95). On a small shared CPU both figures drift by
±15 % from minute to minute, so each round measures the limit right before and right after its
training run (ratio against their mean), and ``--rounds`` repeats the whole round; the median
ratio over rounds is the headline figure.

    python benchmarks/training_speed.py [--data ../shared/datasets/grocery/train] [--image-size 128] [--epochs 2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from _report import command_line, machine_description, write_section
from retrieval import models
from retrieval.models import EmbeddingModel
from retrieval.train import TrainConfig, train

ROOT = Path(__file__).resolve().parent.parent


def limit_images_per_second(args, device, precision: str, steps: int) -> float:
    torch.manual_seed(0)
    model = EmbeddingModel(args.backbone, 128).to(device).train()
    batch = args.classes_per_batch * args.images_per_class
    images = torch.randn(batch, 3, args.image_size, args.image_size, device=device)
    if TrainConfig.channels_last:  # the same memory format training uses
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-4)
    times = []
    for step in range(steps + 2):
        started = time.perf_counter()
        with models.autocast(device, precision):
            embeddings = model.forward_unnormalised(images)
        loss = torch.nn.functional.normalize(embeddings.float(), dim=1)[:, 0].sum()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step >= 2:
            times.append(time.perf_counter() - started)
    return batch * len(times) / sum(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "datasets" / "grocery" / "train")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--classes-per-batch", type=int, default=16)
    parser.add_argument("--images-per-class", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--rounds", type=int, default=1, help="repeat limit-before / training / limit-after")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    device = models.resolve_device(args.device)
    precision = models.resolve_precision(args.precision, device)
    rounds = []
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            config = TrainConfig(
                data_dir=args.data, out=Path(tmp) / "run", backbone=args.backbone, image_size=args.image_size,
                classes_per_batch=args.classes_per_batch, images_per_class=args.images_per_class, epochs=args.epochs,
                val_fraction=0.0, device=args.device, precision=args.precision, num_workers=args.workers,
            )
            before = limit_images_per_second(args, device, precision, steps=20)
            started = time.perf_counter()
            result = train(config, progress=False)
            wall = time.perf_counter() - started
            after = limit_images_per_second(args, device, precision, steps=20)
            steps = json.loads((Path(tmp) / "run" / "config.json").read_text())["steps_per_epoch"]
        training = result.history[-1]["images_per_second"]
        rounds.append({"before": before, "after": after, "training": training, "ratio": training / ((before + after) / 2), "wall": wall})
        print(json.dumps({k: round(v, 2) for k, v in rounds[-1].items()}), flush=True)
    median = statistics.median(r["ratio"] for r in rounds)
    round_lines = [f"| {i} | {r['before']:.1f} | {r['training']:.1f} | {r['after']:.1f} | {r['ratio']:.2f} | {r['wall']:.0f} |"
                   for i, r in enumerate(rounds, 1)]
    body = "\n".join([
        "## Training throughput against the model's own limit (benchmarks/training_speed.py)",
        "",
        f"Machine: {machine_description(device)}, device {device}, precision {precision}, channels_last {TrainConfig.channels_last}.",
        f"Command: `{command_line()}`. {args.backbone} at {args.image_size} px, P×K = {args.classes_per_batch}×{args.images_per_class}, "
        f"triplet + semihard, data {args.data.name} ({steps} steps per epoch); training figure from the last of {args.epochs} epochs.",
        "",
        "Limit: forward + backward + AdamW on a preloaded batch (20 steps), measured right before and right after",
        "the round's training run. Training: the whole step (loader, augmentation, mining, loss, log). Ratio:",
        "training / mean of the two limits.",
        "",
        "| round | limit before img/s | training img/s | limit after img/s | ratio | training wall s |",
        "|---|---|---|---|---|---|",
        *round_lines,
        "",
        f"Median ratio over {len(rounds)} round(s): **{median:.2f}**.",
    ])
    print(body)
    if not args.no_write:
        write_section("training-speed", body)


if __name__ == "__main__":
    main()
