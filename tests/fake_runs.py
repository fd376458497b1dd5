"""Small run directories for the app tests, written the way ``retrieval.training`` writes them.

``make_run`` saves a random-init tiny model (resnet10t, D = 16, 32 px) with a config, a labelled
gallery of coloured 32-px images (that is also the run's ``data_dir``), and, as asked,
``metrics.jsonl``, ``mining/epoch_NNN.jsonl`` (with a pair that recurs across epochs and each
row's ``mined``; ``mined=False`` writes the log as runs before it did, without it),
``mining/confusions.jsonl``, ``val_distances.json`` and a built index; config.json holds a threshold τ
(``"verification"``, ``threshold=None``: none). Not a test module: imported by tests/app and test_browser.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("apple", "banana", "cherry", "damson")
IMAGES_PER_CLASS = 4
MARGIN = 0.2
THRESHOLD = 0.5  # the fake runs' τ (``threshold=None``: a run without one)
BEST_EPOCH = 2  # the fake runs' best epoch (with a τ): the epoch of their τ and their val_distances.json


def make_gallery(root: Path, classes=CLASSES, images_per_class: int = IMAGES_PER_CLASS, size: int = 32) -> Path:
    """``root/<class>/<class>_<i>.png``: a class colour with noise, so classes differ."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        base = np.array([(60 * c) % 256, (255 - 50 * c) % 256, (40 + 90 * c) % 256], dtype=np.float64)
        for i in range(images_per_class):
            pixels = np.clip(base + rng.normal(0, 40, (size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{name}_{i}.png")
    return root


def png_bytes(colour=(200, 30, 30), size: int = 32) -> bytes:
    import io

    buffer = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def mining_rows(epoch: int, mined: bool = True) -> list[dict]:
    """Hardest triplets of one epoch; (apple_0, banana_0) recurs in every epoch and is the one the
    miner did not keep (``mined=False``: no ``mined`` key, as runs written before it was logged)."""
    rows = [
        ("apple/apple_0.png", "apple/apple_1.png", "banana/banana_0.png", 0.50, 0.45 + 0.05 * epoch),
        ("cherry/cherry_0.png", "cherry/cherry_2.png", "damson/damson_1.png", 0.40, 0.40 + 0.02 * epoch),
        (f"banana/banana_{epoch % 3}.png", "banana/banana_3.png", "apple/apple_2.png", 0.30, 0.42),
    ]
    out = []
    for anchor, positive, negative, d_ap, d_an in rows:
        row = {"epoch": epoch}
        for role, path in (("anchor", anchor), ("positive", positive), ("negative", negative)):
            row[f"{role}_path"] = path
            row[f"{role}_label"] = path.split("/")[0]
        row.update(d_ap=d_ap, d_an=d_an, d_an_minus_d_ap=round(d_an - d_ap, 6))
        if mined:
            row["mined"] = not anchor.startswith("apple/")
        out.append(row)
    return sorted(out, key=lambda r: r["d_an_minus_d_ap"])


def confusion_rows(epoch: int) -> list[dict]:
    """``mining/confusions.jsonl`` rows of one epoch: apple's anchors find banana nearest more often as epochs go."""
    rows = [("apple", "banana", 2 + epoch, 6, 4), ("banana", "apple", 3, 6, 4), ("cherry", "damson", 4 - epoch, 8, 4),
            ("damson", "cherry", 1, 8, 4)]
    return [{"epoch": epoch, "anchor_label": a, "negative_label": b, "nearest": nearest, "met": met, "batches": batches,
             "anchors": 8} for a, b, nearest, met, batches in rows if nearest > 0]


def verification_entry(threshold: float, target_far: float = 0.01) -> dict:
    """config.json's "verification" as training writes it (numbers made up, the shape real)."""
    return {"threshold": threshold, "target_far": target_far, "far": 0.0095, "tar": 0.82, "n_positive_pairs": 240,
            "n_negative_pairs": 12000, "eer": 0.07, "pairs": f"validation classes, epoch {BEST_EPOCH}"}


def make_run(run_dir: Path, gallery: Path, *, index: bool = True, mining: bool = True, metrics: bool = True,
             val_distances: bool = True, epochs: int = 3, backbone: str = "resnet10t", embedding_dim: int = 16,
             image_size: int = 32, mined: bool = True, confusions: bool = True, threshold: float | None = THRESHOLD) -> Path:
    from retrieval.model import EmbeddingModel
    from retrieval.run import save_model

    model = EmbeddingModel(backbone, embedding_dim)
    config = {
        "image_size": image_size, "data_config": model.data_config(image_size), "loss": "triplet",
        "miner": "semihard", "margin": MARGIN, "temperature": 0.1, "data_dir": str(gallery.resolve()),
        "class_names": sorted(p.name for p in gallery.iterdir() if p.is_dir()),
    }
    if threshold is not None:
        config["verification"] = verification_entry(threshold)
        config["best_epoch"] = BEST_EPOCH  # the epoch its τ names
    save_model(run_dir, model, config)
    if metrics:
        rows = [{"epoch": e, "loss": None if e == 0 else 0.3 / e, "recall_at_1": 0.3 + 0.1 * e,
                 "map_at_r": 0.1 + 0.05 * e, "active_fraction": None if e == 0 else 0.6 - 0.1 * e,
                 "violating_fraction": None if e == 0 else 0.3 - 0.05 * e,
                 "seconds": 1.0, "mean_d_ap": 0.5, "mean_d_an": 0.6, "lr": 1e-3, "images_per_second": 100.0,
                 "eer": 0.3 - 0.05 * e, "tar_at_far": {"0.1": 0.5 + 0.1 * e, "0.01": 0.3 + 0.1 * e},
                 "n_positive_pairs": 240, "n_negative_pairs": 12000, "threshold": 0.3 + 0.05 * e}
                for e in range(epochs + 1)]
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if mining:
        (run_dir / "mining").mkdir(exist_ok=True)
        for e in range(1, epochs + 1):
            (run_dir / "mining" / f"epoch_{e:03d}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in mining_rows(e, mined)))
        if confusions:
            rows = [row for e in range(1, epochs + 1) for row in confusion_rows(e)]
            (run_dir / "mining" / "confusions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if val_distances:
        rng = np.random.default_rng(1)
        (run_dir / "val_distances.json").write_text(json.dumps({
            "margin": MARGIN,
            "positive": rng.uniform(0.2, 0.8, 60).round(4).tolist(),
            "negative": rng.uniform(0.6, 1.4, 200).round(4).tolist(),
            "epoch": BEST_EPOCH if threshold is not None else epochs,  # the served weights' (training writes the best epoch's)
        }))
    if index:
        from retrieval.index import build_index

        build_index(run_dir, gallery, n_trees=4, device="cpu", num_workers=0, precision="fp32")
    return run_dir
