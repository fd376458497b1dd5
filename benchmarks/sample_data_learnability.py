"""Is the generated sample data hard for raw pixels and an untrained model, yet learnable in ~90 s of CPU?

Measures Recall@1 on the held-out test classes (leave-one-out over the test photos) and for
test photos against the catalogue images (one per class), for: raw pixels (mean-centred), an
untrained (random-init) backbone, and the same backbone after ``--seconds`` of training from
scratch on the train classes with a P x K batch and a simple in-batch loss (supervised
InfoNCE, semi-hard triplet or batch-hard triplet). Self-contained on purpose: it checks the data,
not the project's trainer.

    python benchmarks/sample_data_learnability.py [--data sample_data/products] [--seconds 90]
        [--backbone resnet18] [--loss supcon|semihard|batchhard] [--threads 2] [--json] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from _report import command_line, machine_description, write_section
from retrieval.model import EmbeddingModel
from retrieval.sample_data import generate_sample_data


def load_split(root: Path, split: str, names: list[str] | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    names = names or sorted(p.name for p in (root / split).iterdir() if p.is_dir())
    images, labels = [], []
    for label, name in enumerate(names):
        for path in sorted((root / split / name).iterdir()):
            images.append(np.asarray(Image.open(path).convert("RGB"), np.float32) / 255.0)
            labels.append(label)
    return np.stack(images), np.array(labels), names


def recall_at_1(queries: np.ndarray, query_labels: np.ndarray, gallery=None, gallery_labels=None) -> float:
    """Recall@1 with cosine similarity; leave-one-out when no gallery is given."""
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    if gallery is None:
        similarity = q @ q.T
        np.fill_diagonal(similarity, -np.inf)
        gallery_labels = query_labels
    else:
        similarity = q @ (gallery / np.linalg.norm(gallery, axis=1, keepdims=True)).T
    return float((gallery_labels[similarity.argmax(1)] == query_labels).mean())


def top_confusions(embeddings: np.ndarray, labels: np.ndarray, names: list[str], top: int = 6) -> list[list]:
    """The most frequent (query class, wrongly retrieved class, count) at rank 1, leave-one-out."""
    e = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    similarity = e @ e.T
    np.fill_diagonal(similarity, -np.inf)
    nearest = labels[similarity.argmax(1)]
    pairs: dict[tuple[str, str], int] = {}
    for query, found in zip(labels, nearest):
        if query != found:
            key = (names[query], names[found])
            pairs[key] = pairs.get(key, 0) + 1
    return [[q, f, n] for (q, f), n in sorted(pairs.items(), key=lambda item: -item[1])[:top]]


def raw_pixels(images: np.ndarray) -> np.ndarray:
    flat = images.reshape(len(images), -1)
    return flat - flat.mean(1, keepdims=True)


def batch_loss(embeddings: torch.Tensor, labels: torch.Tensor, kind: str, margin: float = 0.2) -> torch.Tensor:
    same = labels[:, None] == labels[None]
    eye = torch.eye(len(labels), dtype=torch.bool)
    if kind == "supcon":  # InfoNCE over every in-batch positive, temperature 0.1
        logits = (embeddings @ embeddings.T / 0.1).masked_fill(eye, -1e9)
        log_prob = logits - logits.logsumexp(1, keepdim=True)
        positives = same & ~eye
        return -(log_prob * positives).sum(1).div(positives.sum(1)).mean()
    distances = torch.cdist(embeddings, embeddings)
    if kind == "batchhard":
        d_ap = (distances * same).max(1).values
        d_an = (distances + same * 10.0).min(1).values
        return F.relu(d_ap - d_an + margin).mean()
    d_ap, d_an = distances[:, :, None], distances[:, None, :]  # semi-hard, nonzero mean
    valid = (same & ~eye)[:, :, None] & (~same)[:, None, :]
    losses = F.relu(d_ap - d_an + margin)[valid & (d_an > d_ap) & (d_an < d_ap + margin)]
    losses = losses[losses > 0]
    return losses.mean() if len(losses) else distances.sum() * 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("sample_data/products"))
    parser.add_argument("--seconds", type=float, default=90.0)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--loss", choices=["supcon", "semihard", "batchhard"], default="supcon")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--classes-per-batch", type=int, default=12)
    parser.add_argument("--images-per-class", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    # Generate the default data set only where there is none: never replace a variant someone made.
    generated = generate_sample_data(args.data) if not args.data.exists() else {"seconds": None}

    train_x, train_y, train_names = load_split(args.data, "train")
    test_x, test_y, test_names = load_split(args.data, "test")
    catalog_x, catalog_y, _ = load_split(args.data, "catalog", test_names)
    result: dict = {
        "data": str(args.data),
        "generation_seconds": generated["seconds"],
        "raw_pixel_r1": recall_at_1(raw_pixels(test_x), test_y),
        "raw_pixel_catalog_r1": recall_at_1(raw_pixels(test_x), test_y, raw_pixels(catalog_x), catalog_y),
    }
    model = EmbeddingModel(args.backbone, 128, pretrained=False)
    config = model.data_config(test_x.shape[1])
    mean = torch.tensor(config["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(config["std"]).view(1, 3, 1, 1)

    def tensors(images: np.ndarray) -> torch.Tensor:
        return (torch.from_numpy(images).permute(0, 3, 1, 2) - mean) / std

    def embed(images: np.ndarray) -> np.ndarray:
        model.eval()
        with torch.no_grad():
            return torch.cat([model(tensors(images[i : i + 128])) for i in range(0, len(images), 128)]).numpy()

    result["untrained_r1"] = recall_at_1(embed(test_x), test_y)
    result["untrained_catalog_r1"] = recall_at_1(embed(test_x), test_y, embed(catalog_x), catalog_y)

    optimiser = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    rng = np.random.default_rng(args.seed)
    train_t = tensors(train_x)
    by_class = [np.flatnonzero(train_y == c) for c in range(len(train_names))]
    p, k = min(args.classes_per_batch, len(train_names)), args.images_per_class
    labels = torch.from_numpy(np.repeat(np.arange(p), k))
    size = train_t.shape[-1]
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < args.seconds:
        model.train()
        classes = rng.choice(len(train_names), p, replace=False)
        index = np.concatenate([rng.choice(by_class[c], k, replace=len(by_class[c]) < k) for c in classes])
        batch = F.pad(train_t[index], (4, 4, 4, 4), mode="reflect")  # a random 4-pixel shift
        dx, dy = rng.integers(0, 9, size=2)
        loss = batch_loss(model(batch[:, :, dy : dy + size, dx : dx + size]), labels, args.loss)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        steps += 1
    seconds = time.perf_counter() - start
    result.update(
        {
            "backbone": args.backbone,
            "loss": args.loss,
            "threads": args.threads,
            "train_seconds": round(seconds, 1),
            "steps": steps,
            "images_per_second": round(steps * p * k / seconds, 1),
            "trained_r1": recall_at_1(embed(test_x), test_y),
            "trained_catalog_r1": recall_at_1(embed(test_x), test_y, embed(catalog_x), catalog_y),
            "trained_train_r1": recall_at_1(embed(train_x), train_y),
            "confusions": top_confusions(embed(test_x), test_y, test_names),
        }
    )
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:24s} {value}")
    if not args.no_write:
        rows = [
            ("raw pixels", result["raw_pixel_r1"], result["raw_pixel_catalog_r1"]),
            (f"{args.backbone}, untrained", result["untrained_r1"], result["untrained_catalog_r1"]),
            (f"{args.backbone}, {seconds:.0f} s {args.loss} ({steps} steps)", result["trained_r1"], result["trained_catalog_r1"]),
        ]
        table = "\n".join(f"| {name} | {a:.3f} | {b:.3f} |" for name, a, b in rows)
        write_section(
            "sample-data-learnability",
            f"## Sample data: hard for pixels, learnable in {args.seconds:.0f} s\n\n"
            f"`{command_line()}` on {machine_description()}; "
            f"{len(test_names)} test classes, {len(test_y)} photos, {result['images_per_second']} training images/s.\n\n"
            "| embedding | test Recall@1 (leave-one-out) | test photo -> catalogue Recall@1 |\n|---|---|---|\n" + table,
        )


if __name__ == "__main__":
    main()
