"""retrieval.training.totals: an epoch's logged hardest triplets against a brute-force loop over every
triplet of its batches (with a semihard miner, negatives nearer than the positive appear, marked
not mined), its per-anchor fractions and its class confusions."""

from pathlib import Path

import pytest
import torch

from retrieval import data
from retrieval.mining import TripletMiner
from retrieval.training.totals import EpochTotals

MARGIN, KEEP, POOL = 0.3, 6, 18


def epoch_batches(seed, n_batches=4, size=10):
    """Batches of random float64 embeddings over a pool of images (an image can come back in a later
    batch, embedded differently): (embeddings, labels, dataset indices)."""
    generator = torch.Generator().manual_seed(seed)
    pool_labels = torch.arange(POOL) % 4
    batches = []
    for _ in range(n_batches):
        indices = torch.randperm(POOL, generator=generator)[:size]
        batches.append((torch.randn(size, 5, generator=generator, dtype=torch.float64), pool_labels[indices], indices))
    return batches


def brute_rows(batches, mined_by):
    """Every valid triplet of every batch by loops, as dataset indices with its gap and whether the
    miner kept it; per unordered (anchor, negative) image pair the smallest gap, of all and of the
    mined; the k hardest of each; their union hardest first."""
    best_all, best_mined = {}, {}
    for x, labels, indices in batches:
        mined = mined_by(x, labels)
        unit = torch.nn.functional.normalize(x)
        d = torch.cdist(unit, unit)
        y = labels.tolist()
        for a in range(len(y)):
            for p in range(len(y)):
                for n in range(len(y)):
                    if a == p or y[a] != y[p] or y[n] == y[a]:
                        continue
                    triplet = tuple(int(indices[i]) for i in (a, p, n))
                    gap = float(d[a, n] - d[a, p])
                    key = frozenset((triplet[0], triplet[2]))
                    row = (gap, triplet, (a, p, n) in mined)
                    for best, counted in ((best_all, True), (best_mined, row[2])):
                        if counted and (key not in best or gap < best[key][0]):
                            best[key] = row
    union = {}
    for best in (best_all, best_mined):
        for gap, triplet, kept in sorted(best.values())[:KEEP]:
            union.setdefault(triplet, (gap, triplet, kept))
    return sorted(union.values())


def folder():
    classes = ["w", "x", "y", "z"]
    return data.ImageFolder(root=Path("/data"), paths=[Path(f"/data/{classes[i % 4]}/{i}.png") for i in range(POOL)],
                            labels=[i % 4 for i in range(POOL)], class_names=classes)


@pytest.mark.parametrize("strategy", ["semihard", "all", "batch-hard"])
def test_the_logged_hardest_are_those_of_a_loop_over_every_triplet_with_whether_the_miner_kept_them(strategy):
    batches = epoch_batches(0)
    totals = EpochTotals(KEEP)
    miner = TripletMiner(strategy, MARGIN, hardest_k=KEEP)
    for x, labels, indices in batches:
        totals.add(0.1, len(x), miner(x, labels, indices).record, x)
    rows = totals.hardest_rows(2, folder(), Path("/data"))

    def mined_by(x, labels):
        m = miner(x, labels)
        return set(zip(m.anchors.tolist(), m.positives.tolist(), m.negatives.tolist()))

    expected = brute_rows(batches, mined_by)
    assert [(r["anchor_path"], r["positive_path"], r["negative_path"], r["mined"]) for r in rows] == [
        tuple(f"{'wxyz'[i % 4]}/{i}.png" for i in triplet) + (kept,) for _, triplet, kept in expected]
    assert [r["d_an_minus_d_ap"] for r in rows] == pytest.approx([gap for gap, _, _ in expected], abs=1e-9)
    for r in rows:  # each row's distances are those of the batch it names
        x, _, indices = batches[r["batch"] - 1]
        where = {int(i): k for k, i in enumerate(indices)}
        a, p, n = (where[int(Path(r[f"{role}_path"]).stem)] for role in ("anchor", "positive", "negative"))
        unit = torch.nn.functional.normalize(x)
        assert float((unit[a] - unit[p]).norm()) == pytest.approx(r["d_ap"], abs=1e-6)
        assert float((unit[a] - unit[n]).norm()) == pytest.approx(r["d_an"], abs=1e-6)
    if strategy == "semihard":  # the batches' hardest lie below 0, which semihard never keeps
        assert rows[0]["d_an_minus_d_ap"] < 0 and rows[0]["mined"] is False
        assert all(0 < r["d_an_minus_d_ap"] < MARGIN for r in rows if r["mined"])
    if strategy == "all":
        assert all(r["mined"] for r in rows)


def test_anchor_fractions_and_summary_count_each_anchors_nearest_negative_against_its_farthest_positive():
    batches = epoch_batches(1)
    totals = EpochTotals(KEEP)
    n_anchors = inverted = inside = 0
    for x, labels, indices in batches:
        totals.add(0.1, len(x), TripletMiner("semihard", MARGIN)(x, labels, indices).record, x)
        unit = torch.nn.functional.normalize(x)
        d = torch.cdist(unit, unit)
        y = labels.tolist()
        for a in range(len(y)):
            positives = [d[a, p] for p in range(len(y)) if p != a and y[p] == y[a]]
            negatives = [d[a, n] for n in range(len(y)) if y[n] != y[a]]
            if positives and negatives:
                gap = float(min(negatives) - max(positives))
                n_anchors, inverted, inside = n_anchors + 1, inverted + (gap < 0), inside + (gap < MARGIN)
    row = totals.summary(1, 1.0, 1e-3)
    assert row["inverted_anchor_fraction"] == pytest.approx(inverted / n_anchors)
    assert row["violating_anchor_fraction"] == pytest.approx(inside / n_anchors)
    rows = totals.confusion_rows(1, folder().class_names)
    assert sum(r["nearest"] for r in rows) == sum(len(x) for x, _, _ in batches)  # one nearest negative per anchor
    assert {r["anchor_label"] for r in rows} <= set("wxyz")
