"""Retrieval quality of every objective on real data, against pytorch-metric-learning in the same pipeline.

For each data set (faces: ``att_faces/train`` → unseen ``att_faces/test``; products:
``grocery/train`` → unseen ``grocery/test``, leave-one-out, and ``grocery/test`` → ``grocery/catalog``)
it trains one run per objective with its natural miner on the same backbone, image size, epochs and
seeds, plus a peer row where pytorch-metric-learning's TripletMarginLoss + TripletMarginMiner("semihard")
replace ours inside the same training loop, plus the untrained model, and reports R@1, R@5 and
MAP@R (mean ± standard deviation over seeds) and training minutes.

    python benchmarks/quality.py --datasets faces grocery --seeds 0 1 2 [--epochs 15] [--device auto]

From pretrained weights (``--weights FILE``, the fine-tuning regime): every setting not typed takes
``retrieval train``'s fine-tuning defaults, and the table gains the default objective (what
``retrieval train --weights FILE`` does with no other flag) and the recipe from before the
fine-tuning defaults (no head warm-up, BatchNorm in train mode). ``--catalogue-copies N`` adds the
catalogue image of each *training* class (never a test class's) N times to grocery's training folder
(through links in a temporary folder), to close the gap between shop photos and catalogue images.

    python benchmarks/quality.py --weights ../shared/weights/tf_efficientnet_lite0.imagenet.safetensors \
        --backbone tf_efficientnet_lite0 --image-size 128 --epochs 5 --section quality-pretrained

``--results FILE`` keeps each finished run as a JSON line and reuses runs already there with the
same settings, so an interrupted benchmark goes on where it stopped.

The table goes into BENCHMARKS.md (section "quality", or ``--section NAME``). Data sets are read from ../shared/datasets
beside the checkout (``--datasets-root`` to change).
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
from retrieval.model import resolve_device
from retrieval.training import TrainConfig, train

ROOT = Path(__file__).resolve().parent.parent
DATASETS = {
    "faces": {"train": "att_faces/train", "evals": [("att_faces/test", None)]},
    "grocery": {"train": "grocery/train", "evals": [("grocery/test", None), ("grocery/test", "grocery/catalog")]},
}
#: objective rows: (name, loss, miner) — each loss with its natural miner
ROWS = [
    ("untrained", None, None),
    ("triplet + semihard", "triplet", "semihard"),
    ("triplet + batch-hard", "triplet", "batch-hard"),
    ("contrastive", "contrastive", "none"),
    ("lifted structured", "lifted", "none"),
    ("N-pair", "npair", "none"),
    ("NCE", "nce", "none"),
    ("InfoNCE", "infonce", "none"),
    ("PML triplet + semihard (peer)", "pml", None),
]
#: rows added from pretrained weights: (name, loss, miner, settings that replace the fine-tuning defaults)
PRETRAINED_ROWS = [
    ("defaults (retrieval train --weights)", "defaults", None, {}),
    ("triplet + semihard, no warm-up, BN train (before)", "triplet", "semihard",
     {"freeze_backbone_epochs": 0.0, "bn_mode": "train", "backbone_lr_scale": 0.1, "backbone_stages": 0}),
]
#: settings the benchmark passes to TrainConfig only when typed (else retrieval train's defaults)
OPTIONAL_SETTINGS = ("embedding_dim", "margin", "temperature", "lr", "freeze_backbone_epochs", "backbone_lr_scale", "bn_mode",
                     "backbone_stages")


def pml_objective(margin: float):
    """pytorch-metric-learning's TripletMarginLoss + TripletMarginMiner("semihard"), as a loss for our loop."""
    from pytorch_metric_learning import losses, miners

    miner = miners.TripletMarginMiner(margin=margin, type_of_triplets="semihard")
    loss = losses.TripletMarginLoss(margin=margin)

    def pml_loss(embeddings, labels, mined=None):
        return loss(embeddings, labels, miner(embeddings, labels))

    return pml_loss, None


def run_row(name, loss, miner, dataset, seed, args, workdir: Path, settings: dict | None = None) -> dict:
    spec = DATASETS[dataset]
    run = workdir / f"{dataset}-{loss or 'untrained'}-{miner}-{seed}-{len(list(workdir.iterdir()))}"
    optional = {k: getattr(args, k) for k in OPTIONAL_SETTINGS if getattr(args, k) is not None}
    config = TrainConfig(
        data_dir=training_folder(dataset, args, workdir), out=run, backbone=args.backbone, image_size=args.image_size,
        weights=args.weights, epochs=0 if loss is None else args.epochs,
        loss=None if loss == "defaults" else "triplet" if loss in (None, "pml") else loss,
        miner=miner if loss not in (None, "pml") else None, classes_per_batch=args.classes_per_batch,
        images_per_class=args.images_per_class, val_fraction=0.0, seed=seed, device=args.device,
        num_workers=args.workers, hardest_per_epoch=20, **{**optional, **(settings or {})},
    ).resolve()
    key = {"dataset": dataset, "row": name, "seed": seed, "catalogue_copies": args.catalogue_copies,
           "settings": {k: v for k, v in config.train_settings().items() if k not in ("out", "data_dir", "command", "num_workers", "device")}}
    if (stored := _stored_result(args.results, key)) is not None:
        print(json.dumps({"reused": True, **_short(key, stored)}), flush=True)
        return {**stored, "seed": seed}
    if args.finished_only:
        return None
    objective = pml_objective(config.margin) if loss == "pml" else None
    started = time.perf_counter()
    train(config, progress=False, objective=objective)
    results = {"minutes": (time.perf_counter() - started) / 60, **evaluate_dataset(run, spec, args)}
    print(json.dumps(_short(key, results)), flush=True)
    if args.results is not None:
        with open(args.results, "a") as stream:
            stream.write(json.dumps({**key, "results": results}) + "\n")
    return {**results, "seed": seed}


def evaluate_dataset(run: Path, spec: dict, args) -> dict:
    """Each of the data set's evaluations, each folder embedded once (retrieval.evaluate's own embedding
    and metrics: leave-one-out on the query folder, and the query folder against a gallery)."""
    from retrieval.evaluate import _embed_labelled_sets, retrieval_metrics

    results = {}
    query = spec["evals"][0][0]
    galleries = [gallery for q, gallery in spec["evals"] if gallery is not None and q == query]
    root = args.datasets_root
    if galleries:
        _, sets, _ = _embed_labelled_sets(run, None, root / query, root / galleries[0], batch_size=64, device=args.device,
                                       num_workers=args.workers, precision="auto", on_progress=None)
    else:
        _, sets, _ = _embed_labelled_sets(run, root / query, None, None, batch_size=64, device=args.device,
                                       num_workers=args.workers, precision="auto", on_progress=None)
    for q, gallery in spec["evals"]:
        assert q == query, "every evaluation of a data set queries the same folder"
        pair = sets if gallery is not None else [sets[0]]
        results[f"{query}->{gallery or 'itself'}"] = dict(retrieval_metrics(*pair[0], *(pair[1] if len(pair) > 1 else (None, None))))
    return results


def training_folder(dataset: str, args, workdir: Path) -> Path:
    """The data set's training folder; with ``--catalogue-copies N`` (grocery) a folder of links to it
    plus N links to the catalogue image of each training class (the test classes' stay out)."""
    train_dir = args.datasets_root / DATASETS[dataset]["train"]
    if not args.catalogue_copies or dataset != "grocery":
        return train_dir
    merged = workdir / f"grocery-train-with-{args.catalogue_copies}-catalogue-copies"
    if merged.is_dir():
        return merged
    catalogue = args.datasets_root / "grocery" / "catalog"
    for class_dir in sorted(p for p in train_dir.iterdir() if p.is_dir()):
        target = merged / class_dir.name
        target.mkdir(parents=True)
        for image in class_dir.iterdir():
            (target / image.name).symlink_to(image.resolve())
        for image in sorted((catalogue / class_dir.name).iterdir()):
            for copy in range(args.catalogue_copies):
                (target / f"catalogue-{copy}-{image.name}").symlink_to(image.resolve())
    return merged


def _stored_result(path: Path | None, key: dict) -> dict | None:
    if path is None or not path.is_file():
        return None
    for line in path.read_text().splitlines():
        entry = json.loads(line)
        if {k: entry.get(k) for k in key} == key:
            return entry["results"]
    return None


def _short(key: dict, results: dict) -> dict:
    return {"dataset": key["dataset"], "row": key["row"], "seed": key["seed"], "minutes": round(results["minutes"], 2),
            **{k: {m: round(v[m], 4) for m in ("recall_at_1", "recall_at_5", "map_at_r")} for k, v in results.items() if k != "minutes"}}


def _row_matches(name: str, wanted: str) -> bool:
    """``wanted`` names one row exactly ("NCE" is not "InfoNCE"), or else is a substring of its name."""
    names = {row[0].lower() for row in ROWS + PRETRAINED_ROWS}
    wanted = wanted.lower()
    return name.lower() == wanted if wanted in names else wanted in name.lower()


def mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def _settings_line(args) -> str:
    """The settings every row shares, as ``retrieval train`` resolves them for this command."""
    optional = {k: getattr(args, k) for k in OPTIONAL_SETTINGS if getattr(args, k) is not None}
    c = TrainConfig(data_dir=Path("."), out=Path("."), backbone=args.backbone, weights=args.weights, **optional).resolve()
    start = (f"from `{args.weights.name}` (fine-tuning defaults of `retrieval train` unless typed: head warm-up "
             f"{c.freeze_backbone_epochs:g} epoch(s) with the backbone frozen, then its last {c.backbone_stages or 'all'} stages learn "
             f"at lr × {c.backbone_lr_scale:g}, BatchNorm {c.bn_mode})"
             if args.weights is not None else "from scratch (pretrained=False: no network here)")
    catalogue = (f" Grocery trains also on {args.catalogue_copies} copies of each training class's catalogue image."
                 if args.catalogue_copies else "")
    return (f"Backbone {args.backbone} {start}, {args.image_size} px, embedding {c.embedding_dim}, {args.epochs} epochs, "
            f"P×K = {args.classes_per_batch}×{args.images_per_class}, AdamW lr {c.lr:g} with cosine schedule, margin {c.margin}, "
            f"temperature {c.temperature}; mean ± std over seeds {args.seeds}.{catalogue} Test classes are unseen in training; "
            "`X->itself` is leave-one-out within X, `X->Y` queries X against gallery Y.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["faces", "grocery"], choices=sorted(DATASETS))
    parser.add_argument("--datasets-root", type=Path, default=ROOT.parent / "shared" / "datasets")
    parser.add_argument("--rows", nargs="+", default=None, help="subset of rows: exact row names, or substrings of them")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--embedding-dim", type=int, default=None, help="default: retrieval train's")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--margin", type=float, default=None, help="default: retrieval train's")
    parser.add_argument("--temperature", type=float, default=None, help="default: retrieval train's")
    parser.add_argument("--classes-per-batch", type=int, default=16)
    parser.add_argument("--images-per-class", type=int, default=4)
    parser.add_argument("--lr", type=float, default=None, help="default: retrieval train's")
    parser.add_argument("--weights", type=Path, default=None, help="pretrained backbone weights (.safetensors, timm's key names)")
    parser.add_argument("--freeze-backbone-epochs", type=float, default=None, help="default: retrieval train's")
    parser.add_argument("--backbone-lr-scale", type=float, default=None, help="default: retrieval train's")
    parser.add_argument("--bn-mode", default=None, help="default: retrieval train's")
    parser.add_argument("--backbone-stages", type=int, default=None, help="default: retrieval train's")
    parser.add_argument("--catalogue-copies", type=int, default=0, help="grocery: train also on N copies of each training class's catalogue image")
    parser.add_argument("--results", type=Path, default=None, help="JSONL of finished runs, reused when the settings match")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--section", default="quality", help="BENCHMARKS.md section to write")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--finished-only", action="store_true",
                        help="train nothing: tables from the runs in --results only (each row says which seeds it has)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    every_row = [(*row, {}) for row in ROWS] + (PRETRAINED_ROWS if args.weights is not None else [])
    rows = [r for r in every_row if args.rows is None or any(_row_matches(r[0], s) for s in args.rows)]
    tables = []
    with tempfile.TemporaryDirectory(prefix="quality-") as tmp:
        for dataset in args.datasets:
            results = {name: [r for seed in args.seeds if (r := run_row(name, loss, miner, dataset, seed, args, Path(tmp), settings))]
                       for name, loss, miner, settings in rows}
            results = {name: runs for name, runs in results.items() if runs}
            if not results:
                continue
            evals = [k for k in next(iter(results.values()))[0] if k not in ("minutes", "seed")]
            header = "| objective | seeds | " + " | ".join(f"{e} R@1 | R@5 | MAP@R" for e in evals) + " | train min |"
            lines = [f"### {dataset}", "", header, "|---" * (3 + 3 * len(evals)) + "|"]
            for name, runs in results.items():
                cells = [", ".join(str(r["seed"]) for r in runs)]
                for e in evals:
                    for metric in ("recall_at_1", "recall_at_5", "map_at_r"):
                        cells.append(mean_std([r[e][metric] for r in runs]))
                lines.append(f"| {name} | " + " | ".join(cells) + f" | {statistics.mean(r['minutes'] for r in runs):.2f} |")
            tables.append("\n".join(lines))
    body = "\n".join([
        f"## Retrieval quality on real data: {' and '.join(args.datasets)} (benchmarks/quality.py)",
        "",
        f"Machine: {machine_description(device)}, device {device}.",
        f"Command: `{command_line()}`.",
        _settings_line(args),
        "",
        "\n\n".join(tables),
    ])
    print(body)
    if not args.no_write:
        write_section(args.section, body)


if __name__ == "__main__":
    torch.set_num_threads(max(1, torch.get_num_threads()))
    main()
