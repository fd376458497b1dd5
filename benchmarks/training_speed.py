"""Is the training step starved by data loading or slowed by mining?

Compares, in one process on the same machine, images/s of

- **limit**: forward + backward + AdamW step of the same backbone (and head) on a preloaded batch
  of random tensors, in the precision training uses: nothing but the model's own compute;
- **training**: ``retrieval train``'s whole loop (loader workers decoding and augmenting real
  images, P×K sampling, semihard mining with its record, triplet loss, optimiser, mining log),
  read from metrics.jsonl per epoch (training steps only, validation excluded).

The ratio training / limit is the goal (≥ 0.95). On a small shared CPU both figures drift by
±15 % from minute to minute, so the limit is measured between epochs, from the training run's own
``on_epoch`` hook (loader workers idle, RNG state restored): each epoch's ratio is its images/s
over the mean of the limits measured right before and right after it. The first epoch reads and
decodes the images into the cache and is not counted. ``--rounds`` repeats the training run;
``--workers 0 1 2`` compares loader-worker counts, each round running every count in turn
(interleaved, so the machine's drift hits them alike); leave it out for the default
``retrieval train`` picks. The median ratio over the counted epochs is the headline figure.

    python benchmarks/training_speed.py [--data ../shared/datasets/grocery/train] [--image-size 128] [--epochs 4] [--rounds 2] [--workers 0 1 2]
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
from retrieval import data
from retrieval import model as models
from retrieval.model import EmbeddingModel
from retrieval.training import DEFAULTS, TrainConfig, train

ROOT = Path(__file__).resolve().parent.parent


class Limit:
    """Forward + backward + AdamW of the backbone on one preloaded random batch, as training runs it."""

    def __init__(self, args, device: torch.device, precision: str) -> None:
        self.device, self.precision = device, precision
        self.batch = args.classes_per_batch * args.images_per_class
        with torch.random.fork_rng(devices=[]):  # leave the training run's random state alone
            torch.manual_seed(0)
            self.model = EmbeddingModel(args.backbone, args.embedding_dim).to(device).train()
            self.images = torch.randn(self.batch, 3, args.image_size, args.image_size, device=device)
        if DEFAULTS["channels_last"]:  # the same memory format training uses
            self.model = self.model.to(memory_format=torch.channels_last)
            self.images = self.images.contiguous(memory_format=torch.channels_last)
        self.optimiser = torch.optim.AdamW(self.model.parameters(), lr=1e-4)

    def images_per_second(self, steps: int) -> float:
        times = []
        for step in range(steps + 2):  # two warm-up steps
            started = time.perf_counter()
            with models.autocast(self.device, self.precision):
                embeddings = self.model.forward_unnormalised(self.images)
            loss = torch.nn.functional.normalize(embeddings.float(), dim=1)[:, 0].sum()
            self.optimiser.zero_grad(set_to_none=True)
            loss.backward()
            self.optimiser.step()
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            if step >= 2:
                times.append(time.perf_counter() - started)
        return self.batch * len(times) / sum(times)


def loader_milliseconds(args, data_config: dict, *, normalise_in_batch: bool, batches: int = 18) -> tuple[float, float]:
    """(one core's ms to make a batch as a loader worker does, the training thread's ms to finish it).

    A worker's share: per-item seeding, augmentation from the decoded-image cache (warmed first),
    collation; on one thread, as in a worker. The step's share: ``finish_batch`` (normalising uint8
    pixels; nothing for per-image normalisation) on the training threads.
    """
    from retrieval.training.seeded_items import SeededItems

    folder = data.scan_folder(args.data, verify=False)
    size = args.classes_per_batch * args.images_per_class
    keys = [[(0, 1, b * size + i, (b * size + i) % len(folder)) for i in range(size)] for b in range(batches)]
    with torch.random.fork_rng(devices=[]):
        transform = data.build_transforms(data_config, train=True, normalise_in_batch=normalise_in_batch)
    items = SeededItems(data.ImageDataset(folder.paths, folder.labels, transform, cache_bytes=2**31))
    for batch in keys:  # decode into the cache
        data.collate_images([items[key] for key in batch])
    threads = torch.get_num_threads()
    worker = finish = 0.0
    with torch.random.fork_rng(devices=[]):
        for number, batch in enumerate(keys):
            torch.set_num_threads(1)  # a loader worker's one thread
            started = time.perf_counter()
            images = data.collate_images([items[key] for key in batch])[0]
            made = time.perf_counter()
            torch.set_num_threads(threads)
            transform.finish_batch(images)
            if number >= 2:  # two warm-up batches
                worker += made - started
                finish += time.perf_counter() - made
    torch.set_num_threads(threads)
    return 1000 * worker / (batches - 2), 1000 * finish / (batches - 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "datasets" / "grocery" / "train")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--embedding-dim", type=int, default=DEFAULTS["embedding_dim"])
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--classes-per-batch", type=int, default=16)
    parser.add_argument("--images-per-class", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=4, help="per training run; the first (cache fill) is not counted")
    parser.add_argument("--limit-steps", type=int, default=12, help="limit steps measured between epochs")
    parser.add_argument("--workers", type=int, nargs="+", default=[None], help="loader workers (several: compared, interleaved)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--rounds", type=int, default=1, help="training runs per worker count")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (the first fills the cache and is not counted)")
    device = models.resolve_device(args.device)
    precision = models.resolve_precision(args.precision, device)
    limit = Limit(args, device, precision)
    data_config = limit.model.data_config(args.image_size)
    step_ms = 1000 * limit.batch / limit.images_per_second(args.limit_steps)
    loader = {deferred: loader_milliseconds(args, data_config, normalise_in_batch=deferred) for deferred in (False, True)}
    print(json.dumps({"step_ms": round(step_ms, 1), "loader_ms": {str(k): [round(x, 1) for x in v] for k, v in loader.items()}}), flush=True)
    rows = []
    for number in range(1, args.rounds + 1):
        for workers in args.workers:
            limits: list[float] = []
            with tempfile.TemporaryDirectory() as tmp:
                config = TrainConfig(
                    data_dir=args.data, out=Path(tmp) / "run", backbone=args.backbone, embedding_dim=args.embedding_dim,
                    image_size=args.image_size, classes_per_batch=args.classes_per_batch,
                    images_per_class=args.images_per_class, epochs=args.epochs, val_fraction=0.0, device=args.device,
                    precision=args.precision, num_workers=workers,
                )
                result = train(config, progress=False, on_epoch=lambda row: limits.append(limit.images_per_second(args.limit_steps)))
                steps = json.loads((Path(tmp) / "run" / "config.json").read_text())["steps_per_epoch"]
            used = data.default_num_workers(device) if workers is None else workers
            for epoch in range(2, args.epochs + 1):
                before, after = limits[epoch - 2], limits[epoch - 1]
                training = result.history[epoch]["images_per_second"]
                rows.append({"round": number, "workers": used, "epoch": epoch, "before": before, "training": training,
                             "after": after, "ratio": training / ((before + after) / 2)})
                print(json.dumps({k: round(v, 3) for k, v in rows[-1].items()}), flush=True)
    medians = {w: statistics.median(r["ratio"] for r in rows if r["workers"] == w) for w in sorted({r["workers"] for r in rows})}
    counted = args.rounds * (args.epochs - 1)
    lines = [f"| {r['round']} | {r['workers']} | {r['epoch']} | {r['before']:.1f} | {r['training']:.1f} | {r['after']:.1f} | {r['ratio']:.2f} |"
             for r in rows]
    body = "\n".join([
        "## Training throughput against the model's own limit (benchmarks/training_speed.py)",
        "",
        f"Machine: {machine_description(device)}, device {device}, precision {precision}, channels_last {DEFAULTS['channels_last']}.",
        f"Command: `{command_line()}`. {args.backbone} at {args.image_size} px, embedding {args.embedding_dim}, "
        f"P×K = {args.classes_per_batch}×{args.images_per_class}, triplet + semihard, data {args.data.name} "
        f"({steps} steps per epoch), {args.epochs} epochs a run, the first (reading and decoding into the cache) not counted.",
        "",
        f"Limit: forward + backward + AdamW on a preloaded batch ({args.limit_steps} steps), measured between epochs",
        "inside the training process. Training: the epoch's whole step (loader, augmentation, mining, loss, log).",
        "Ratio: the epoch's training images/s over the mean of the limits right before and right after it.",
        "",
        "| round | loader workers | epoch | limit before img/s | training img/s | limit after img/s | ratio |",
        "|---|---|---|---|---|---|---|",
        *lines,
        "",
        *(f"Median ratio over {counted} epochs with {w} loader worker(s): **{m:.2f}**." for w, m in medians.items()),
        "",
        f"Loader work per batch of {limit.batch} (images cached, as in every epoch after the first), against the",
        f"limit's {step_ms:.0f} ms step: one core's time to make the batch in a worker, and the training",
        "threads' time to finish it:",
        "",
        "| pixels handed over | worker ms (one core) | step ms | total as % of the model's step |",
        "|---|---|---|---|",
        *(f"| {'uint8, normalised per batch in the step (training)' if deferred else 'float32, normalised per image in the worker'} "
          f"| {worker:.1f} | {finish:.1f} | {100 * (worker + finish) / step_ms:.1f} % |"
          for deferred, (worker, finish) in loader.items()),
    ])
    print(body)
    if not args.no_write:
        write_section("training-speed", body)


if __name__ == "__main__":
    main()
