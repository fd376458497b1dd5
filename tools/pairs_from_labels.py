"""Build a positive-only pair file from a labelled folder, to benchmark ``retrieval train --pairs``.

Keeps a random fraction of the same-class pairs of each class (exactly round(fraction * n(n-1)/2)
of a class of n images, seeded) and writes them as ``image_a,image_b`` rows with paths relative
to DATA_DIR. Nothing about different-class pairs is written: as in implicit feedback, the rest is
unknown, not negative. Prints how the kept pairs link the images (connected components), since
training uses the links transitively.

    python tools/pairs_from_labels.py ../shared/datasets/att_faces/train --fraction 0.3 --seed 0 --out pairs.csv
"""

from __future__ import annotations

import argparse
import csv
import io
import json
from itertools import combinations
from pathlib import Path

import numpy as np

from retrieval.data import scan_folder
from retrieval.errors import RetrievalError
from retrieval.training.sources.pairs import connected_components


def pairs_from_labels(data_dir: str | Path, fraction: float, seed: int = 0) -> list[tuple[str, str]]:
    """round(fraction * pairs) same-class pairs per class, drawn without replacement, as relative paths."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    folder = scan_folder(data_dir, labelled=True)
    rng = np.random.default_rng(seed)
    labels = np.asarray(folder.labels)
    rows: list[tuple[str, str]] = []
    for c in range(len(folder.class_names)):
        members = np.flatnonzero(labels == c)
        candidates = list(combinations(members.tolist(), 2))
        keep = int(round(fraction * len(candidates)))
        for k in sorted(rng.choice(len(candidates), size=keep, replace=False).tolist()):
            a, b = candidates[k]
            rows.append((folder.relative_path(a), folder.relative_path(b)))
    return rows


def pairs_csv(rows: list[tuple[str, str]]) -> str:
    """The pair file's text: a header and one ``image_a,image_b`` row a pair, quoted where a path holds
    a comma, a quote, a line break or begins with ``#`` (which would start a comment), as
    ``retrieval train --pairs`` reads CSV."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["image_a", "image_b"])
    for a, b in rows:
        if a.startswith("#"):  # unquoted, the row would be a comment line
            text.write('"' + a.replace('"', '""') + '",')
            writer.writerow([b])
        else:
            writer.writerow([a, b])
    return text.getvalue()


def link_summary(data_dir: str | Path, rows: list[tuple[str, str]]) -> dict:
    """How the pairs link the folder: components of two or more, linked images, classes split in pieces."""
    folder = scan_folder(data_dir, labelled=True)
    index = {folder.relative_path(i): i for i in range(len(folder.paths))}
    components = connected_components(len(folder.paths), [(index[a], index[b]) for a, b in rows])
    sizes = np.bincount(components)
    linked = sizes[components] >= 2
    pieces = [len(set(components[(np.asarray(folder.labels) == c) & linked].tolist())) for c in range(len(folder.class_names))]
    return {
        "pairs": len(rows),
        "images": len(folder.paths),
        "linked_images": int(linked.sum()),
        "components": int((sizes >= 2).sum()),
        "classes": len(folder.class_names),
        "classes_in_one_component": int(sum(p == 1 for p in pieces)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--fraction", type=float, default=0.3, help="Fraction of each class's same-class pairs to keep.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if not 0 < args.fraction <= 1:  # one line and exit status 2, as for any other bad flag
        parser.error(f"--fraction must be in (0, 1], got {args.fraction:g}")
    try:
        rows = pairs_from_labels(args.data_dir, args.fraction, args.seed)
    except RetrievalError as error:  # a missing or unlabelled folder: one line, not a traceback
        parser.error(str(error))
    if args.out.is_dir():
        parser.error(f"--out {args.out} is a folder; give the pair file's name, e.g. {args.out / 'pairs.csv'}")
    if not args.out.parent.is_dir():
        parser.error(f"--out {args.out}: folder not found: {args.out.parent}")
    args.out.write_text(pairs_csv(rows))
    print(json.dumps({"out": str(args.out), "fraction": args.fraction, "seed": args.seed, **link_summary(args.data_dir, rows)}))


if __name__ == "__main__":
    main()
