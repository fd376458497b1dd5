"""Verification on unseen classes: EER, TAR at FAR 1e-2, and whether a threshold chosen on the
validation classes holds on test classes that neither training nor the threshold saw.

For each data set (faces: train on ``att_faces/train``, test on ``att_faces/test``; products: train
on ``grocery/train``, test on ``grocery/test``) and each objective of the quality benchmark
(``benchmarks/quality.py``'s rows, with their natural miners; the PML peer only when named with
``--rows``) it trains one run per seed with validation classes held out (``--val-fraction``, default
0.2). Training stores τ, chosen on every pair of the validation classes at ``--target-far``
(default 0.01), with the best epoch. Then every pair of the test folder (leave-one-out:
``retrieval.evaluate.evaluate_run``) gives the test EER, TAR at FAR 1e-2, R@1 and MAP@R, and the
FAR and TAR at the stored τ. The threshold "holds" when the FAR measured at τ on the test pairs is
within a factor of 2 of the target: target / 2 ≤ FAR_test(τ) ≤ 2 · target.

    python benchmarks/verification.py --datasets faces grocery --seeds 0 1 2 --backbone resnet10t \\
        --image-size 64 --epochs faces=20 grocery=8 [--results runs.jsonl]

``--results FILE`` appends each finished run as one JSON line and reuses the runs already there
(same data set, row, seed and settings), so an interrupted measurement continues where it stopped.
The tables go into BENCHMARKS.md (section "verification", or ``--section NAME``).
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
from quality import ROWS, _row_matches, mean_std, pml_objective
from retrieval.evaluate import evaluate_run
from retrieval.model import resolve_device
from retrieval.run import read_config
from retrieval.training import TrainConfig, train

ROOT = Path(__file__).resolve().parent.parent
DATASETS = {"faces": ("att_faces/train", "att_faces/test"), "grocery": ("grocery/train", "grocery/test")}
DEFAULT_EPOCHS = {"faces": 20, "grocery": 8}  # the quality benchmark's
#: the rows measured unless --rows names others (the peer is another library's triplet loss, not a threshold question)
DEFAULT_ROWS = [name for name, loss, _ in ROWS if loss != "pml"]
FACTOR = 2.0


def settings(args, dataset: str) -> dict:
    """What a run's numbers depend on (the key under which --results reuses them)."""
    return {"backbone": args.backbone, "image_size": args.image_size, "embedding_dim": args.embedding_dim,
            "epochs": args.epochs[dataset], "margin": args.margin, "temperature": args.temperature,
            "classes_per_batch": args.classes_per_batch, "images_per_class": args.images_per_class, "lr": args.lr,
            "val_fraction": args.val_fraction, "target_far": args.target_far}


def run_one(name, loss, miner, dataset, seed, args, workdir: Path) -> dict:
    """Train one run with validation classes, then measure its test pairs at the stored τ."""
    train_dir, test_dir = (args.datasets_root / d for d in DATASETS[dataset])
    run = workdir / f"{dataset}-{loss or 'untrained'}-{miner}-{seed}"
    s = settings(args, dataset)
    config = TrainConfig(
        data_dir=train_dir, out=run, backbone=s["backbone"], image_size=s["image_size"], embedding_dim=s["embedding_dim"],
        epochs=0 if loss is None else s["epochs"], loss="triplet" if loss in (None, "pml") else loss,
        miner=miner if loss not in (None, "pml") else None, margin=s["margin"], temperature=s["temperature"],
        classes_per_batch=s["classes_per_batch"], images_per_class=s["images_per_class"], lr=s["lr"],
        val_fraction=s["val_fraction"], target_far=s["target_far"], seed=seed, device=args.device,
        num_workers=args.workers, hardest_per_epoch=20,
    )
    started = time.perf_counter()
    train(config, progress=False, objective=pml_objective(args.margin) if loss == "pml" else None)
    minutes = (time.perf_counter() - started) / 60
    stored = read_config(run).verification or {}
    test = evaluate_run(run, test_dir, device=args.device)
    return {"dataset": dataset, "row": name, "seed": seed, "settings": s, "minutes": round(minutes, 2),
            "best_epoch": read_config(run).get("best_epoch"), "validation": stored,
            "test": {k: test[k] for k in ("recall_at_1", "map_at_r", "eer", "tar_at_far", "n_positive_pairs",
                                          "n_negative_pairs", "threshold", "far_at_threshold", "frr_at_threshold")}}


def holds(far: float | None, target: float) -> bool:
    """Whether a FAR measured at τ lies within a factor FACTOR of its target."""
    return far is not None and target / FACTOR <= far <= target * FACTOR


def table(dataset: str, rows: dict[str, list[dict]], target: float) -> str:
    """One data set's table: test quality and verification, and τ from validation against the test FAR."""
    runs = [r for group in rows.values() for r in group]
    val_pos, val_neg = (_span([r["validation"].get(k) for r in runs]) for k in ("n_positive_pairs", "n_negative_pairs"))
    test = runs[0]["test"]
    lines = [
        f"### {dataset}: {val_pos} same-class and {val_neg} different-class validation pairs"
        + (" (by seed: each seed holds out other classes)" if "–" in val_pos + val_neg else "")
        + f"; {test['n_positive_pairs']} same-class and {test['n_negative_pairs']} different-class test pairs",
        "",
        "| objective | seeds | test R@1 | test MAP@R | test EER | test TAR@FAR 1e-2 | val EER | τ | val FAR(τ) | test FAR(τ) "
        f"| test FAR(τ) by seed | within ×{FACTOR:g} | test TAR(τ) | train min |",
        "|---" * 14 + "|",
    ]
    for name, runs in rows.items():
        test, val = [r["test"] for r in runs], [r["validation"] for r in runs]
        cells = [", ".join(str(r["seed"]) for r in runs), mean_std([t["recall_at_1"] for t in test]), mean_std([t["map_at_r"] for t in test]),
                 mean_std([t["eer"] for t in test]), _mean_or_dash([t["tar_at_far"].get("0.01") for t in test]),
                 _mean_or_dash([v.get("eer") for v in val]), _mean_or_dash([v.get("threshold") for v in val]),
                 _mean_or_dash([v.get("far") for v in val]), _mean_or_dash([t["far_at_threshold"] for t in test]),
                 ", ".join("-" if t["far_at_threshold"] is None else f"{t['far_at_threshold']:.4f}" for t in test),
                 f"{sum(holds(t['far_at_threshold'], target) for t in test)} / {len(test)}",
                 _mean_or_dash([None if t["frr_at_threshold"] is None else 1 - t["frr_at_threshold"] for t in test]),
                 f"{statistics.mean(r['minutes'] for r in runs):.2f}"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _span(values: list) -> str:
    """"N" when all seeds agree, else "MIN–MAX"."""
    values = [v for v in values if v is not None]
    if not values:
        return "?"
    return f"{min(values)}" if min(values) == max(values) else f"{min(values)}–{max(values)}"


def _mean_or_dash(values: list) -> str:
    values = [v for v in values if v is not None]
    return mean_std(values) if values else "-"


def _load_results(path: Path | None) -> list[dict]:
    if path is None or not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["faces", "grocery"], choices=sorted(DATASETS))
    parser.add_argument("--datasets-root", type=Path, default=ROOT.parent / "shared" / "datasets")
    parser.add_argument("--rows", nargs="+", default=None, help="subset of rows: exact row names, or substrings of them")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--backbone", default="resnet10t")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--embedding-dim", type=int, default=128)
    parser.add_argument("--epochs", nargs="+", default=[f"{k}={v}" for k, v in DEFAULT_EPOCHS.items()],
                        help="epochs per data set as NAME=N (or one N for all)")
    parser.add_argument("--margin", type=float, default=0.2)
    parser.add_argument("--temperature", type=float, default=0.1)
    parser.add_argument("--classes-per-batch", type=int, default=16)
    parser.add_argument("--images-per-class", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--target-far", type=float, default=0.01)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--results", type=Path, default=None, help="JSON lines of finished runs: appended, and reused")
    parser.add_argument("--section", default="verification", help="BENCHMARKS.md section to write")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--finished-only", action="store_true",
                        help="train nothing: tables from the runs in --results only (each row says which seeds it has)")
    args = parser.parse_args()
    epochs = dict(DEFAULT_EPOCHS)
    for item in args.epochs:
        if "=" in item:
            key, value = item.split("=", 1)
            epochs[key] = int(value)
        else:
            epochs = {key: int(item) for key in DATASETS}
    args.epochs = epochs
    return args


def main() -> None:
    args = parse_args()
    device = resolve_device(args.device)
    wanted = args.rows or DEFAULT_ROWS
    rows = [r for r in ROWS if any(_row_matches(r[0], w) for w in wanted)]
    done = _load_results(args.results)
    tables = []
    with tempfile.TemporaryDirectory(prefix="verification-") as tmp:
        for dataset in args.datasets:
            results: dict[str, list[dict]] = {}
            for name, loss, miner in rows:
                for seed in args.seeds:
                    found = [r for r in done if (r["dataset"], r["row"], r["seed"], r["settings"]) == (dataset, name, seed, settings(args, dataset))]
                    if not found and args.finished_only:
                        continue
                    result = found[-1] if found else run_one(name, loss, miner, dataset, seed, args, Path(tmp))
                    if not found:
                        print(json.dumps(result), flush=True)
                        if args.results is not None:
                            with args.results.open("a") as handle:
                                handle.write(json.dumps(result) + "\n")
                    results.setdefault(name, []).append(result)
            if results:
                tables.append(table(dataset, results, args.target_far))
    epochs = ", ".join(f"{d} {args.epochs[d]}" for d in args.datasets)
    body = "\n".join([
        f"## Verification on unseen classes: {' and '.join(args.datasets)} (benchmarks/verification.py)",
        "",
        f"Machine: {machine_description(device)}, device {device}.",
        f"Command: `{command_line()}`.",
        f"Backbone {args.backbone} from scratch (pretrained=False), {args.image_size} px, embedding {args.embedding_dim}, "
        f"epochs: {epochs}; P×K = {args.classes_per_batch}×{args.images_per_class}, AdamW lr {args.lr}, margin {args.margin}, "
        f"temperature {args.temperature}; {args.val_fraction:.0%} of the training classes held out as validation classes; "
        f"τ chosen on every validation pair at target FAR {args.target_far:g} and stored with the best epoch (by validation "
        f"MAP@R; the untrained row: epoch 0). Test: every pair of the unseen test folder. Mean ± std over the seeds each row names (asked for: {args.seeds}). "
        f"\"seeds within ×{FACTOR:g}\": seeds whose test FAR at τ lies in [{args.target_far / FACTOR:g}, {args.target_far * FACTOR:g}].",
        "",
        "\n\n".join(tables),
    ])
    print(body)
    if not args.no_write:
        write_section(args.section, body)


if __name__ == "__main__":
    torch.set_num_threads(max(1, torch.get_num_threads()))
    main()
