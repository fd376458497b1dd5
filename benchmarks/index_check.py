"""What checking an index before Annoy maps it costs: the full SHA-256 and the node-by-node check of
``gallery.ann`` (retrieval.index.annoy_file.check_annoy_file), against reading the file.

Builds an angular Annoy index of N random unit vectors (default 1M x 128, 50 trees: the size
BENCHMARKS.md's index section measures) and times, best of 3 with the file in the page cache:
reading it in 16 MiB blocks (the reference: no check can cost less than a read), its SHA-256
alone, ``check_annoy_file`` (one pass: hash and layout), the check of indexes built before
(SHA-256 of the first and last MiB), and the full SHA-256 of ``embeddings.npy``. The section goes
between ``<!-- index-check:start -->`` and ``<!-- index-check:end -->`` in BENCHMARKS.md.

    python benchmarks/index_check.py                 # 1M items, writes BENCHMARKS.md
    python benchmarks/index_check.py --items 100000 --no-write
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import command_line, machine_description, write_section  # noqa: E402

from retrieval.index.annoy_file import build_annoy, check_annoy_file  # noqa: E402
from retrieval.index.metadata import _head_tail_check  # noqa: E402
from retrieval.index.store import RowWriter  # noqa: E402
from retrieval.run import sha256_file  # noqa: E402


def build(workdir: Path, n: int, dim: int, n_trees: int) -> tuple[Path, Path, float]:
    """(gallery.ann, embeddings.npy, build seconds) of N random unit vectors."""
    embeddings, ann = workdir / "embeddings.npy", workdir / "gallery.ann"
    rng = np.random.default_rng(0)
    with RowWriter(embeddings, n, dim) as writer:
        for start in range(0, n, 100_000):
            rows = rng.normal(size=(min(100_000, n - start), dim)).astype(np.float32)
            writer.write(start, rows / np.linalg.norm(rows, axis=1, keepdims=True))
    started = time.perf_counter()
    build_annoy(embeddings, ann, n_trees=n_trees).unload()
    return ann, embeddings, time.perf_counter() - started


def read_all(path: Path) -> None:
    with open(path, "rb") as handle:
        while handle.read(16 << 20):
            pass


def best_of(repeats: int, work) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times)


def measure(ann: Path, embeddings: Path, n: int, dim: int, repeats: int) -> dict[str, float]:
    read_all(ann)  # into the page cache
    return {
        "read": best_of(repeats, lambda: read_all(ann)),
        "sha256": best_of(repeats, lambda: sha256_file(ann)),
        "check": best_of(repeats, lambda: check_annoy_file(ann, dim, n)),
        "head_tail": best_of(repeats, lambda: _head_tail_check(ann)),
        "npy_sha256": best_of(repeats, lambda: sha256_file(embeddings)),
    }


def report(args, n_bytes: int, npy_bytes: int, build_s: float, t: dict[str, float], load: tuple[float, float]) -> str:
    gib, mib_s = n_bytes / 2**30, lambda s: n_bytes / 2**20 / s
    return f"""## Index load check (`benchmarks/index_check.py`)

- Machine: {machine_description()}. Load average (1 min) {load[0]:.1f} at the start, {load[1]:.1f} at the end: the machine was shared with other jobs, wall-clock figures are pessimistic.
- Command: `{command_line()}`
- Index: {args.items:,} random unit vectors of dimension {args.dim}, {args.n_trees} trees: `gallery.ann` {gib:.2f} GiB (built in {build_s:.0f} s), `embeddings.npy` {npy_bytes / 2**30:.2f} GiB. Best of {args.repeats}, files in the page cache (a first load after a reboot also waits for the disk).

| pass over gallery.ann | seconds | MiB/s | / read |
|---|---:|---:|---:|
| read in 16 MiB blocks (reference) | {t['read']:.2f} | {mib_s(t['read']):.0f} | 1.00 |
| SHA-256 alone | {t['sha256']:.2f} | {mib_s(t['sha256']):.0f} | {t['sha256'] / t['read']:.2f} |
| `check_annoy_file`: SHA-256 and every node, one pass (what each load runs) | {t['check']:.2f} | {mib_s(t['check']):.0f} | {t['check'] / t['read']:.2f} |
| first and last MiB (indexes built before the full hash) | {t['head_tail']:.3f} | - | - |

Each `GalleryIndex.load` (each `retrieval search`, the app once per run and index version) also hashes
`embeddings.npy` in full: {t['npy_sha256']:.2f} s. So a 1M-item index costs about
{t['check'] + t['npy_sha256']:.1f} s of checking per load here, against {t['head_tail']:.3f} s before: the price of never
handing Annoy a file that can crash it.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--n-trees", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: a temporary folder)")
    parser.add_argument("--no-write", action="store_true", help="print only, leave BENCHMARKS.md alone")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(dir=args.workdir) as scratch:
        ann, embeddings, build_s = build(Path(scratch), args.items, args.dim, args.n_trees)
        times = measure(ann, embeddings, args.items, args.dim, args.repeats)
        body = report(args, ann.stat().st_size, embeddings.stat().st_size, build_s, times, (load_before, os.getloadavg()[0]))
    print(body)
    if not args.no_write:
        write_section("index-check", body)


if __name__ == "__main__":
    main()
