"""Training without negative labels, measured: does it beat the untrained backbone, and how close do
positive-only pairs come to supervised training?

For each data set (``att_faces``, ``grocery`` under ``--root``) and seed, these runs train on
``DATA/train`` and are evaluated leave-one-out on the unseen classes of ``DATA/test`` (exactly
``retrieval evaluate RUN DATA/test``: Recall@1 and MAP@R):

- ``untrained``: the randomly initialised backbone (``--epochs 0``), the floor;
- ``unlabelled``: ``--unlabelled`` (two augmented views per image, InfoNCE); the folder's labels
  are hidden from training and only hold out the validation classes;
- ``pairs-random`` / ``pairs-hard``: ``--pairs`` with a pair file holding ``--fraction`` (30 %) of
  each class's same-class pairs (``tools/pairs_from_labels.py``), ``--pair-negatives random``
  or ``hard``;
- ``sparse-pairs-random`` / ``sparse-pairs-hard``: the same with a sparse pair file
  (``--sparse-fraction``), where the links leave each class in many pieces, so that unlinked
  same-class images do turn up as negatives (the missing-not-negative case);
- ``supervised``: labelled training with the same loss, the ceiling.

Every trained run uses the same model, loss (``--loss``, InfoNCE by default), P×K and epochs.
Runs are independent processes (``--jobs`` at a time); each result is appended to
``--results`` (JSON lines) as it arrives, and the table of means over seeds goes to
BENCHMARKS.md between ``<!-- unlabelled:start -->`` and ``<!-- unlabelled:end -->``.

    python benchmarks/unlabelled.py --root ../shared/datasets --seeds 0 1 2 --jobs 6
    python benchmarks/unlabelled.py --report-only   # the table again from benchmarks/unlabelled_results.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _report import machine_description, write_section

METHODS = ("untrained", "unlabelled", "pairs-random", "pairs-hard", "supervised", "sparse-pairs-random", "sparse-pairs-hard")
REQUIRED = ("untrained", "unlabelled", "pairs-random", "pairs-hard", "supervised")
DATASETS = ("att_faces", "grocery")


def run_job(job: dict) -> dict:
    """Train one (dataset, method, seed) and evaluate it on the data set's test classes."""
    import torch

    from retrieval.evaluate import evaluate_run
    from retrieval.training import TrainConfig, train

    torch.set_num_threads(max(1, int(job.get("threads", 2))))
    root = Path(job["root"]) / job["dataset"]
    work = Path(job["work_dir"]) / f"{job['dataset']}-{job['method']}-s{job['seed']}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    method = job["method"]
    settings = dict(
        data_dir=root / "train", out=work / "run", backbone=job["backbone"], image_size=job["image_size"],
        embedding_dim=job["embedding_dim"], epochs=job["epochs"][job["dataset"]], loss=job["loss"], lr=job["lr"],
        classes_per_batch=job["P"], images_per_class=job["K"], seed=job["seed"], device=job["device"],
        num_workers=job["workers"], val_fraction=0.2, hardest_per_epoch=10, temperature=job["temperature"],
    )
    extra: dict = {}
    if method == "untrained":
        settings["epochs"] = 0
    elif method == "unlabelled":
        settings.update(unlabelled=True, loss="infonce")
    elif "pairs" in method:
        fraction = job["sparse_fraction"][job["dataset"]] if method.startswith("sparse") else job["fraction"]
        pairs = work / "pairs.csv"
        links = _pairs_from_labels(root / "train", fraction, job["seed"], pairs)
        settings.update(pairs=pairs, pair_negatives=method.rsplit("-", 1)[1])
        extra = {"fraction": fraction, "links": links}
    started = time.perf_counter()
    result = train(TrainConfig(**settings), progress=False)
    seconds = time.perf_counter() - started
    metrics = evaluate_run(work / "run", root / "test", device=job["device"], batch_size=128)
    config = json.loads((work / "run" / "config.json").read_text())
    history = result.history
    out = {
        "dataset": job["dataset"], "method": method, "seed": job["seed"],
        "recall_at_1": metrics["recall_at_1"], "map_at_r": metrics["map_at_r"], "recall_at_5": metrics["recall_at_5"],
        "n_queries": metrics["n_queries"], "train_seconds": round(seconds, 1), "best_epoch": result.best_epoch,
        "epochs": settings["epochs"], "loss": config["loss"], "val_map_at_r": [r.get("map_at_r") for r in history],
        "n_components": config.get("n_components"), "device": machine_description(torch.device(job["device"]) if job["device"] != "auto" else None),
        **extra,
    }
    shutil.rmtree(work, ignore_errors=True)
    return out


def _pairs_from_labels(data_dir: Path, fraction: float, seed: int, out: Path) -> dict:
    """Write the pair file with ``tools/pairs_from_labels.py``; returns how its pairs link the images."""
    tool = Path(__file__).resolve().parent.parent / "tools" / "pairs_from_labels.py"
    command = [sys.executable, str(tool), str(data_dir), "--fraction", repr(fraction), "--seed", str(seed), "--out", str(out)]
    written = json.loads(subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True).stdout.strip().splitlines()[-1])
    return {key: value for key, value in written.items() if key not in ("out", "fraction", "seed")}


def run_all(args: argparse.Namespace) -> None:
    jobs = []
    for seed in args.seeds:  # the required methods of every seed first, so a cut-short run still has them
        for dataset in args.datasets:
            for method in args.methods:
                if method in REQUIRED:
                    jobs.append((dataset, method, seed))
    for seed in args.seeds:
        for dataset in args.datasets:
            for method in args.methods:
                if method not in REQUIRED:
                    jobs.append((dataset, method, seed))
    done = {(r["dataset"], r["method"], r["seed"]) for r in read_results(args.results)} if args.resume else set()
    if not args.resume and args.results.exists():
        args.results.unlink()
    jobs = [j for j in jobs if j not in done]
    common = dict(
        root=str(args.root), work_dir=str(args.work_dir), backbone=args.backbone, image_size=args.image_size,
        embedding_dim=args.embedding_dim, epochs={"att_faces": args.epochs_faces, "grocery": args.epochs_grocery},
        loss=args.loss, lr=args.lr, P=args.P, K=args.K, device=args.device, workers=args.workers, threads=args.threads,
        temperature=args.temperature, fraction=args.fraction,
        sparse_fraction={"att_faces": args.sparse_fraction_faces, "grocery": args.sparse_fraction_grocery},
    )
    running: list[tuple[subprocess.Popen, tuple]] = []
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    started = time.perf_counter()
    while jobs or running:
        while jobs and len(running) < args.jobs:
            dataset, method, seed = jobs.pop(0)
            spec = json.dumps({**common, "dataset": dataset, "method": method, "seed": seed})
            process = subprocess.Popen([sys.executable, __file__, "--job", spec], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
            running.append((process, (dataset, method, seed)))
        time.sleep(0.5)
        for process, key in list(running):
            if process.poll() is None:
                continue
            running.remove((process, key))
            stdout, stderr = process.communicate()
            lines = [line for line in stdout.splitlines() if line.startswith("{")]
            if process.returncode != 0 or not lines:
                print(f"FAILED {key}: {stderr.strip().splitlines()[-3:]}", flush=True)
                continue
            row = json.loads(lines[-1])
            with open(args.results, "a") as handle:
                handle.write(json.dumps(row) + "\n")
            print(f"{time.perf_counter() - started:6.0f}s {key}: R@1 {row['recall_at_1']:.3f} MAP@R {row['map_at_r']:.3f} "
                  f"({row['train_seconds']:.0f} s, best epoch {row['best_epoch']})", flush=True)


def read_results(path: Path) -> list[dict]:
    if not Path(path).is_file():
        return []
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def report(rows: list[dict], args: argparse.Namespace) -> str:
    """The BENCHMARKS.md section: one row per (dataset, method), mean ± sd over seeds."""
    if not rows:
        return "No results."
    lines = [
        "### Training without negative labels (`--unlabelled`, `--pairs`)",
        "",
        f"Machine: {rows[0]['device']}. Written by `{args.command}`.",
        f"Every run: {args.backbone} from scratch (`pretrained=False`), {args.image_size} px, D = {args.embedding_dim}, "
        f"P×K = {args.P}×{args.K} (unlabelled: {args.P * args.K // 2} images × 2 views), AdamW lr {args.lr:g}, "
        f"loss `{args.loss}` (τ = {args.temperature:g}; `--unlabelled` always InfoNCE), epochs: att_faces {args.epochs_faces}, "
        f"grocery {args.epochs_grocery}; 20 % of the training classes held out to pick the best epoch. "
        "Labels of `train/` are hidden from the unlabelled and pair runs (pairs are drawn from them by "
        "`tools/pairs_from_labels.py`). Scores: `retrieval evaluate RUN DATA/test` (leave-one-out on classes never "
        "seen in training: att_faces 10 subjects / 100 images, grocery 40 products / 2640 photos), mean ± sd over seeds.",
        "",
        *([args.note, ""] if args.note else []),
        "| data set | method | pairs given → linked groups trained on | Recall@1 | MAP@R | R@1 / MAP@R − untrained | seeds | train s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for dataset in DATASETS:
        floor = [r for r in rows if r["dataset"] == dataset and r["method"] == "untrained"]
        for method in METHODS:
            group = [r for r in rows if r["dataset"] == dataset and r["method"] == method]
            if not group:
                continue
            pairs = "-"
            if "links" in group[0]:
                links = group[0]["links"]
                trained_on = statistics.mean(r["n_components"] for r in group)
                pairs = f"{group[0]['fraction']:.0%} of same-class pairs ({links['pairs']}) → {trained_on:.0f} groups"
            gain = "-"
            if floor and method != "untrained":
                gain = (f"{statistics.mean(r['recall_at_1'] for r in group) - statistics.mean(r['recall_at_1'] for r in floor):+.3f} / "
                        f"{statistics.mean(r['map_at_r'] for r in group) - statistics.mean(r['map_at_r'] for r in floor):+.3f}")
            lines.append(
                f"| {dataset} | {method} | {pairs} | {_mean_sd([r['recall_at_1'] for r in group])} | "
                f"{_mean_sd([r['map_at_r'] for r in group])} | {gain} | {len(group)} | {statistics.mean(r['train_seconds'] for r in group):.0f} |"
            )
    return "\n".join(lines)


def _mean_sd(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--job", help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent.parent / "shared" / "datasets")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--embedding-dim", type=int, default=128)
    parser.add_argument("--loss", default="infonce")
    parser.add_argument("--temperature", type=float, default=0.1)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("-P", type=int, default=16)
    parser.add_argument("-K", type=int, default=4)
    parser.add_argument("--epochs-faces", type=int, default=40)
    parser.add_argument("--epochs-grocery", type=int, default=15)
    parser.add_argument("--fraction", type=float, default=0.3)
    parser.add_argument("--sparse-fraction-faces", type=float, default=0.1)
    parser.add_argument("--sparse-fraction-grocery", type=float, default=0.01)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workers", type=int, default=2, help="Loader workers per run.")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per run.")
    parser.add_argument("--jobs", type=int, default=1, help="Runs at a time.")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/unlabelled-benchmark"))
    parser.add_argument("--results", type=Path, default=Path(__file__).resolve().parent / "unlabelled_results.jsonl")
    parser.add_argument("--resume", action="store_true", help="Keep the results file and skip the runs it has.")
    parser.add_argument("--report-only", action="store_true", help="Only write the table from --results.")
    parser.add_argument("--no-write", action="store_true", help="Print the table instead of writing BENCHMARKS.md.")
    parser.add_argument("--command", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--note", default="", help="A line about the data or machine, printed above the table.")
    args = parser.parse_args()
    if args.job:
        print(json.dumps(run_job(json.loads(args.job))))
        return
    args.command = args.command or "python " + " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:])
    if not args.report_only:
        run_all(args)
    text = report(read_results(args.results), args)
    print(text)
    if not args.no_write:
        write_section("unlabelled", text)


if __name__ == "__main__":
    main()
