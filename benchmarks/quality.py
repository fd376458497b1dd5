"""Retrieval quality of every objective on real data, against pytorch-metric-learning in the same pipeline.

For each data set (faces: ``att_faces/train`` → unseen ``att_faces/test``; products:
``grocery/train`` → unseen ``grocery/test``, leave-one-out, and ``grocery/test`` → ``grocery/catalog``)
it trains one run per objective with its natural miner on the same backbone, image size, epochs and
seeds, plus a peer row where pytorch-metric-learning's TripletMarginLoss + TripletMarginMiner("semihard")
replace ours inside the same training loop, plus the untrained model, and reports R@1, R@5 and
MAP@R (mean ± standard deviation over seeds) and training minutes.

    python benchmarks/quality.py --datasets faces grocery --seeds 0 1 2 [--epochs 15] [--device auto]

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
from retrieval.evaluate import evaluate_run
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


def pml_objective(margin: float):
    """pytorch-metric-learning's TripletMarginLoss + TripletMarginMiner("semihard"), as a loss for our loop."""
    from pytorch_metric_learning import losses, miners

    miner = miners.TripletMarginMiner(margin=margin, type_of_triplets="semihard")
    loss = losses.TripletMarginLoss(margin=margin)

    def pml_loss(embeddings, labels, mined=None):
        return loss(embeddings, labels, miner(embeddings, labels))

    return pml_loss, None


def run_row(name, loss, miner, dataset, seed, args, workdir: Path) -> dict:
    spec = DATASETS[dataset]
    run = workdir / f"{dataset}-{loss or 'untrained'}-{miner}-{seed}"
    config = TrainConfig(
        data_dir=args.datasets_root / spec["train"], out=run, backbone=args.backbone, image_size=args.image_size,
        embedding_dim=args.embedding_dim, epochs=0 if loss is None else args.epochs,
        loss="triplet" if loss in (None, "pml") else loss, miner=miner if loss not in (None, "pml") else None,
        margin=args.margin, temperature=args.temperature, classes_per_batch=args.classes_per_batch,
        images_per_class=args.images_per_class, lr=args.lr, val_fraction=0.0, seed=seed, device=args.device,
        num_workers=args.workers, hardest_per_epoch=20,
    )
    objective = pml_objective(args.margin) if loss == "pml" else None
    started = time.perf_counter()
    train(config, progress=False, objective=objective)
    minutes = (time.perf_counter() - started) / 60
    results = {"minutes": minutes}
    for query, gallery in spec["evals"]:
        if gallery is None:
            metrics = evaluate_run(run, args.datasets_root / query, device=args.device)
        else:
            metrics = evaluate_run(run, query_dir=args.datasets_root / query, gallery_dir=args.datasets_root / gallery, device=args.device)
        results[f"{query}->{gallery or 'itself'}"] = metrics
    print(json.dumps({"dataset": dataset, "row": name, "seed": seed, "minutes": round(minutes, 2),
                      **{k: {m: round(v[m], 4) for m in ("recall_at_1", "recall_at_5", "map_at_r")} for k, v in results.items() if k != "minutes"}}),
          flush=True)
    return results


def _row_matches(name: str, wanted: str) -> bool:
    """``wanted`` names one row exactly ("NCE" is not "InfoNCE"), or else is a substring of its name."""
    names = {row[0].lower() for row in ROWS}
    wanted = wanted.lower()
    return name.lower() == wanted if wanted in names else wanted in name.lower()


def mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["faces", "grocery"], choices=sorted(DATASETS))
    parser.add_argument("--datasets-root", type=Path, default=ROOT.parent / "shared" / "datasets")
    parser.add_argument("--rows", nargs="+", default=None, help="subset of rows: exact row names, or substrings of them")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--embedding-dim", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--margin", type=float, default=0.2)
    parser.add_argument("--temperature", type=float, default=0.1)
    parser.add_argument("--classes-per-batch", type=int, default=16)
    parser.add_argument("--images-per-class", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--section", default="quality", help="BENCHMARKS.md section to write")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    device = resolve_device(args.device)
    rows = [r for r in ROWS if args.rows is None or any(_row_matches(r[0], s) for s in args.rows)]
    tables = []
    with tempfile.TemporaryDirectory(prefix="quality-") as tmp:
        for dataset in args.datasets:
            results = {name: [run_row(name, loss, miner, dataset, seed, args, Path(tmp)) for seed in args.seeds] for name, loss, miner in rows}
            evals = [k for k in next(iter(results.values()))[0] if k != "minutes"]
            header = "| objective | " + " | ".join(f"{e} R@1 | R@5 | MAP@R" for e in evals) + " | train min |"
            lines = [f"### {dataset}", "", header, "|---" * (2 + 3 * len(evals)) + "|"]
            for name, runs in results.items():
                cells = []
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
        f"Backbone {args.backbone} from scratch (pretrained=False: no network here), {args.image_size} px, embedding {args.embedding_dim}, "
        f"{args.epochs} epochs, P×K = {args.classes_per_batch}×{args.images_per_class}, AdamW lr {args.lr} with cosine schedule, "
        f"margin {args.margin}, temperature {args.temperature}; mean ± std over seeds {args.seeds}. Test classes are unseen in training; "
        "`X->itself` is leave-one-out within X, `X->Y` queries X against gallery Y.",
        "",
        *tables,
    ])
    print(body)
    if not args.no_write:
        write_section(args.section, body)


if __name__ == "__main__":
    torch.set_num_threads(max(1, torch.get_num_threads()))
    main()
