"""Faces in photos against faces as crops: a ``--faces`` run against the same model without it.

Protocol (issue 15): train on ``att_faces/train`` (InfoNCE, resnet10t from scratch, 64 px, D 128,
``--epochs``), once with ``--faces`` and once without (the row to beat), per seed. For each unseen
test person s31-s40, images 1-5 are the queries and images 6-10 the gallery; the split folders are
built here (symbolic links). Three evaluations per run (``retrieval.evaluate.evaluate_run``,
queries against gallery, misses counted: a query without a face found scores 0):

- crop → crop: ``att_faces/test`` crops both sides (the reference);
- scene → crop: the same faces pasted into 480 × 360 photos (``att_faces_scenes/single``) as queries;
- crop → scene: crop queries against a gallery of the scenes.

Goal: scene queries within 0.03 of crop queries on R@1 and MAP@R for the face run.

``--validation`` runs the same protocol on the training people only, for choices that must not
look at the test people: train on s1-s20, evaluate s21-s30 (their ``att_faces/train`` crops, and
the same faces pasted into ``grocery/train`` photos by ``face_scenes.py``, seed 0); the face run
only. ``--fold`` 0, 1 or 2 picks which ten training people are held out (s1-s10, s11-s20, s21-s30;
the default 2 is the split every choice so far was made on), so that the gap between scene and crop
queries can be read on all 30 training people, fold by fold.

    python benchmarks/face_runs.py --seeds 0 1 2 --epochs 20      # about 2 min a run on 2 cores
    python benchmarks/face_runs.py --seeds 0 --epochs 20 --write
    python benchmarks/face_runs.py --validation --seeds 0 1 2     # prints; never writes
    python benchmarks/face_runs.py --validation --fold 0          # s11-s30 train, s1-s10 evaluated

Prints a Markdown section (mean ± sd over seeds); ``--write`` puts it between
``<!-- face-runs:start -->`` and ``<!-- face-runs:end -->`` in BENCHMARKS.md, above the readings
kept there (the table merged from the runs before, and what each was chosen on).
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATASETS = ROOT.parent / "shared" / "datasets"
TRAIN = DATASETS / "att_faces" / "train"
CROPS = DATASETS / "att_faces" / "test"
SCENES = DATASETS / "att_faces_scenes" / "single"
QUERY_IMAGES, GALLERY_IMAGES = range(1, 6), range(6, 11)
EVALUATIONS = (("crop → crop", "crops", "crops"), ("scene → crop", "scenes", "crops"), ("crop → scene", "crops", "scenes"))


VALIDATION_FOLDS = 3  # --validation --fold k: people s(10k+1)-s(10k+10) are evaluated, the other 20 train


def split_folders(root: Path, crops: Path = CROPS, scenes: Path = SCENES, people=None) -> dict[tuple[str, str], Path]:
    """(kind, role) -> a labelled folder of links: kind crops | scenes, role query (1-5) | gallery (6-10);
    ``people``: the person folder names to take (default all)."""
    folders = {}
    for kind, source, suffix in (("crops", crops, ".png"), ("scenes", scenes, ".jpg")):
        for role, numbers in (("query", QUERY_IMAGES), ("gallery", GALLERY_IMAGES)):
            folder = root / f"{kind}_{role}"
            for person in sorted(p for p in source.iterdir() if p.is_dir() and (people is None or p.name in people)):
                (folder / person.name).mkdir(parents=True, exist_ok=True)
                for n in numbers:
                    os.symlink(person / f"{n}{suffix}", folder / person.name / f"{n}{suffix}")
            folders[kind, role] = folder
    return folders


def validation_folders(root: Path, fold: int = VALIDATION_FOLDS - 1) -> tuple[Path, dict[tuple[str, str], Path]]:
    """--validation: (training folder of the 20 people outside ``fold``, split folders of the ten
    people of ``fold``: their crops and validation scenes). Fold k holds out s(10k+1)-s(10k+10)."""
    from face_scenes import make_scenes

    make_scenes(root / "scenes", seed=0)
    held = {f"s{n}" for n in range(10 * fold + 1, 10 * fold + 11)}
    trained = {p.name for p in TRAIN.iterdir() if p.is_dir()} - held
    train_dir = root / "train"
    for person in sorted(p for p in TRAIN.iterdir() if p.name in trained):
        (train_dir / person.name).mkdir(parents=True)
        for image in sorted(person.glob("*.png")):
            os.symlink(image, train_dir / person.name / image.name)
    held_out = {p.name for p in TRAIN.iterdir() if p.is_dir()} - trained
    return train_dir, split_folders(root / "split", crops=TRAIN, scenes=root / "scenes" / "single", people=held_out)


def train_run(out: Path, seed: int, epochs: int, faces: bool, workers: int, data_dir: Path = TRAIN) -> float:
    from retrieval.training import TrainConfig, train

    started = time.perf_counter()
    train(TrainConfig(data_dir=data_dir, out=out, backbone="resnet10t", image_size=64, embedding_dim=128, loss="infonce",
                      epochs=epochs, seed=seed, faces=faces or None, num_workers=workers, device="cpu"), progress=False)
    return time.perf_counter() - started


def evaluate_all(run: Path, folders) -> dict[str, dict]:
    from retrieval.evaluate import evaluate_run

    return {name: evaluate_run(run, query_dir=folders[q, "query"], gallery_dir=folders[g, "gallery"], device="cpu")
            for name, q, g in EVALUATIONS}


def mean_sd(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def report(rows: dict[str, list[dict]], minutes: dict[str, list[float]], args) -> str:
    import torch

    if args.validation:
        return validation_report(rows, minutes, args)
    lines = ["## Faces in photos: `--faces` against the same model without it (benchmarks/face_runs.py)", "",
             f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared with other work while measured), "
             f"torch {torch.__version__}. Command: `python benchmarks/face_runs.py --seeds {' '.join(map(str, args.seeds))} "
             f"--epochs {args.epochs}`. Training: att_faces/train, InfoNCE, resnet10t from scratch, 64 px, D 128, "
             f"{args.epochs} epochs, other settings the defaults; seeds {', '.join(map(str, args.seeds))} (mean ± sd where more than one). "
             "Test: s31-s40, images 1-5 queries, 6-10 gallery; misses (no face found) count as 0.", ""]
    return "\n".join(lines + table(rows, minutes)) + "\n"


def validation_report(rows: dict[str, list[dict]], minutes: dict[str, list[float]], args) -> str:
    first, last = 10 * args.fold + 1, 10 * args.fold + 10
    lines = [f"Validation (`python benchmarks/face_runs.py --validation --fold {args.fold} --seeds {' '.join(map(str, args.seeds))} "
             f"--epochs {args.epochs}`): train on the other 20 people of att_faces/train, evaluate s{first}-s{last} (images 1-5 queries, "
             "6-10 gallery; their crops, and scenes from face_scenes.py, seed 0).", ""]
    return "\n".join(lines + table(rows, minutes)) + "\n"


def table(rows: dict[str, list[dict]], minutes: dict[str, list[float]]) -> list[str]:
    """Markdown lines: per model and evaluation, R@1 and MAP@R (mean ± sd over seeds), queries, misses, train minutes."""
    lines = ["| model | evaluation | R@1 | MAP@R | queries | no face | train min |", "|---|---|---|---|---|---|---|"]
    for model, runs in rows.items():
        for name, _, _ in EVALUATIONS:
            r1 = [run[name]["recall_at_1"] for run in runs]
            mapr = [run[name]["map_at_r"] for run in runs]
            lines.append(f"| {model} | {name} | {mean_sd(r1)} | {mean_sd(mapr)} | {runs[0][name]['n_queries']} | "
                         f"{runs[0][name].get('n_no_face', '-')} | {statistics.mean(minutes[model]):.1f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--validation", action="store_true", help="train on s1-s20, evaluate s21-s30 of att_faces/train (never writes)")
    parser.add_argument("--fold", type=int, choices=range(VALIDATION_FOLDS), default=VALIDATION_FOLDS - 1,
                        help="with --validation: the ten training people held out, s(10k+1)-s(10k+10) (default 2: s21-s30)")
    args = parser.parse_args()
    if args.fold != VALIDATION_FOLDS - 1 and not args.validation:
        parser.error("--fold needs --validation")
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    models = (("--faces", True),) if args.validation else (("--faces", True), ("whole images", False))
    rows: dict[str, list[dict]] = {model: [] for model, _ in models}
    minutes: dict[str, list[float]] = {model: [] for model, _ in models}
    with tempfile.TemporaryDirectory() as tmp:
        if args.validation:
            train_dir, folders = validation_folders(Path(tmp), args.fold)
        else:
            train_dir, folders = TRAIN, split_folders(Path(tmp) / "split")
        for seed in args.seeds:
            for model, faces in models:
                run = Path(tmp) / f"{'faces' if faces else 'whole'}_{seed}"
                minutes[model].append(train_run(run, seed, args.epochs, faces, args.workers, train_dir) / 60)
                rows[model].append(evaluate_all(run, folders))
                print(f"seed {seed} {model}: " + ", ".join(f"{n} R@1 {m['recall_at_1']:.3f}" for n, m in rows[model][-1].items()),
                      file=sys.stderr, flush=True)
    text = report(rows, minutes, args)
    print(text)
    if args.write and not args.validation:
        from _report import write_section  # this folder's report helpers (atomic: a temporary file, then a rename)

        write_section("face-runs", text)


if __name__ == "__main__":
    main()
