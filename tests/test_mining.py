"""retrieval.mining: every miner against a brute-force enumeration, the mining record (the hardest
of every valid triplet with whether the miner kept it, the per-anchor view), parity with
pytorch-metric-learning, edge cases, memory at B=512, CUDA."""

import math
import subprocess
import sys
import textwrap

import pytest
from conftest import brute_is_negative
import torch

from retrieval.losses import NPairLoss
from retrieval.mining import PAIR_STRATEGIES, TRIPLET_STRATEGIES, NPairTriplets, PairMiner, TripletMiner, build_miner
from retrieval.negatives import NegativeRules
from retrieval.tuples import MinedPairs, MinedTriplets

MARGIN = 0.3


def uneven_batch(seed, sizes=(1, 2, 3, 5, 4, 2, 3), dim=6, dtype=torch.float64):
    """Random embeddings with several classes of uneven sizes (one a single sample), shuffled."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.cat([torch.full((s,), c) for c, s in enumerate(sizes)])
    labels = labels[torch.randperm(len(labels), generator=g)]
    return torch.randn(len(labels), dim, generator=g, dtype=dtype), labels


def brute_distances(x):
    rows = [[float(v) for v in r] for r in x]
    unit = [[v / math.sqrt(sum(u * u for u in r)) for v in r] for r in rows]
    return [[math.sqrt(sum((a - b) ** 2 for a, b in zip(ui, uj))) for uj in unit] for ui in unit]


def brute_valid_triplets(labels, is_neg):
    y = [int(v) for v in labels]
    b = len(y)
    return [(a, p, n) for a in range(b) for p in range(b) for n in range(b) if a != p and y[a] == y[p] and is_neg(a, n)]


def brute_mine(x, labels, strategy, margin, rules=None):
    d = brute_distances(x)
    is_neg = brute_is_negative(labels, rules)
    valid = brute_valid_triplets(labels, is_neg)
    y = [int(v) for v in labels]
    b = len(y)
    if strategy == "all":
        return set(valid), valid, d
    if strategy == "hard":
        return {t for t in valid if d[t[0]][t[2]] < d[t[0]][t[1]]}, valid, d
    if strategy == "semihard":
        return {t for t in valid if d[t[0]][t[1]] < d[t[0]][t[2]] < d[t[0]][t[1]] + margin}, valid, d
    if strategy == "easy":
        return {t for t in valid if d[t[0]][t[2]] >= d[t[0]][t[1]] + margin}, valid, d
    mined = set()
    for a in range(b):
        positives = [p for p in range(b) if p != a and y[p] == y[a]]
        negatives = [n for n in range(b) if is_neg(a, n)]
        if not positives or not negatives:
            continue
        if strategy == "batch-hard":
            p = max(positives, key=lambda p: d[a][p])
            n = min(negatives, key=lambda n: d[a][n])
            mined.add((a, p, n))
        else:  # batch-semihard
            for p in positives:
                farther = [n for n in negatives if d[a][n] > d[a][p]]
                n = min(farther, key=lambda n: d[a][n]) if farther else max(negatives, key=lambda n: d[a][n])
                mined.add((a, p, n))
    return mined, valid, d


def as_set(mined):
    return set(zip(mined.anchors.tolist(), mined.positives.tolist(), mined.negatives.tolist()))


RULES = {
    "none": None,
    "never-negative": NegativeRules(never_negative=[(0, 1), (3, 4)]),
    "same-group": NegativeRules(class_groups=[0, 0, 1, 1, 1, 2, 0], negatives="same-group"),
    "prefer-same-group": NegativeRules(never_negative=[(2, 3)], class_groups=[0, 0, 1, 1, 1, 2, 0], negatives="prefer-same-group"),
}


@pytest.mark.parametrize("strategy", TRIPLET_STRATEGIES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_triplet_miner_mines_the_same_triplets_as_brute_force(strategy, seed):
    x, labels = uneven_batch(seed)
    expected, _, _ = brute_mine(x, labels, strategy, MARGIN)
    mined = TripletMiner(strategy, MARGIN)(x, labels)
    assert len(mined) == len(expected)
    assert as_set(mined) == expected


@pytest.mark.parametrize("rules_name", list(RULES)[1:])
@pytest.mark.parametrize("strategy", TRIPLET_STRATEGIES)
def test_triplet_miner_with_negative_rules_mines_the_same_triplets_as_brute_force(strategy, rules_name):
    rules = RULES[rules_name]
    x, labels = uneven_batch(5)
    expected, _, _ = brute_mine(x, labels, strategy, MARGIN, rules)
    mined = TripletMiner(strategy, MARGIN, negative_rules=rules)(x, labels)
    assert as_set(mined) == expected and len(mined) == len(expected)


@pytest.mark.parametrize("strategy", TRIPLET_STRATEGIES)
def test_mining_record_matches_brute_force(strategy):
    x, labels = uneven_batch(3, sizes=(4, 3, 5, 2, 6))
    dataset_indices = torch.arange(len(labels)) * 10 + 7
    expected, valid, d = brute_mine(x, labels, strategy, MARGIN)
    record = TripletMiner(strategy, MARGIN, hardest_k=5)(x, labels, indices=dataset_indices).record
    assert record.n_valid == len(valid)
    assert record.n_mined == len(expected)
    active = [t for t in expected if d[t[0]][t[2]] < d[t[0]][t[1]] + MARGIN]
    assert record.active_fraction == pytest.approx(len(active) / len(expected), abs=1e-12)
    assert record.mean_d_ap == pytest.approx(sum(d[a][p] for a, p, _ in expected) / len(expected), abs=1e-9)
    assert record.mean_d_an == pytest.approx(sum(d[a][n] for a, _, n in expected) / len(expected), abs=1e-9)
    assert record.n_triplets == len(valid)
    assert record.n_violating == sum(1 for a, p, n in valid if d[a][n] - d[a][p] < MARGIN)
    named = lambda t: tuple(int(dataset_indices[i]) for i in t)  # noqa: E731
    gap = lambda t: d[t[0]][t[2]] - d[t[0]][t[1]]  # noqa: E731
    assert_rows_are(record.hardest_mined, [(named(t), True) for t in sorted(expected, key=gap)[:5]], d, dataset_indices)
    assert_rows_are(record.hardest, [(named(t), t in expected) for t in sorted(valid, key=gap)[:5]], d, dataset_indices)


def assert_rows_are(rows, expected, d, dataset_indices):
    """``rows`` of a record name the ``expected`` (triplet of dataset indices, mined) in order, with their distances."""
    assert [((h["anchor"], h["positive"], h["negative"]), h["mined"]) for h in rows] == expected
    batch = {int(v): i for i, v in enumerate(dataset_indices)}
    for h in rows:
        a, p, n = (batch[h[role]] for role in ("anchor", "positive", "negative"))
        assert h["d_ap"] == pytest.approx(d[a][p], abs=1e-9) and h["d_an"] == pytest.approx(d[a][n], abs=1e-9)


def brute_hardest(x, labels, mined, k):
    """The k valid triplets with the smallest d_an − d_ap by a loop over every (a, p, n), each with
    whether it is in ``mined``: [((a, p, n), d_an − d_ap, mined)]."""
    d = brute_distances(x)
    y = [int(v) for v in labels]
    rows = []
    for a in range(len(y)):
        for p in range(len(y)):
            for n in range(len(y)):
                if a != p and y[a] == y[p] and y[n] != y[a]:
                    rows.append(((a, p, n), d[a][n] - d[a][p], (a, p, n) in mined))
    return sorted(rows, key=lambda r: r[1])[:k]


def on_circle(*degrees):
    return torch.tensor([[math.cos(math.radians(t)), math.sin(math.radians(t))] for t in degrees], dtype=torch.float64)


HAND_MADE = {
    # class 0 at 0° and 50°, class 1 at 20° (nearer to 0° than its positive) and 200°, class 2 near 100°
    "one negative inside": (on_circle(0, 50, 20, 200, 95.5, 101.3), torch.tensor([0, 0, 1, 1, 2, 2])),
    # three classes interleaved around the circle: many negatives nearer than the positive (no ties)
    "interleaved": (on_circle(0, 21.3, 47.9, 131.7, 143.2, 172.6, 253.1, 266.8, 297.4), torch.tensor([0, 1, 2] * 3)),
}


@pytest.mark.parametrize("batch_name", list(HAND_MADE))
@pytest.mark.parametrize("strategy", ["semihard", "all", "batch-hard", "batch-semihard", "easy"])
def test_hardest_are_the_smallest_gaps_of_every_triplet_with_whether_the_miner_kept_them(batch_name, strategy):
    x, labels = HAND_MADE[batch_name]
    mined = TripletMiner(strategy, MARGIN, hardest_k=6)(x, labels)
    expected = brute_hardest(x, labels, as_set(mined), 6)
    got = mined.record.hardest
    assert [((h["anchor"], h["positive"], h["negative"]), h["mined"]) for h in got] == [(t, m) for t, _, m in expected]
    assert [h["d_an"] - h["d_ap"] for h in got] == pytest.approx([g for _, g, _ in expected], abs=1e-12)


def test_a_semihard_miner_never_keeps_the_negatives_nearer_than_the_positive_but_its_record_names_them():
    x, labels = HAND_MADE["one negative inside"]
    record = TripletMiner("semihard", MARGIN, hardest_k=6)(x, labels).record
    assert all(h["d_an"] < h["d_ap"] and h["mined"] is False for h in record.hardest)
    named = {(h["anchor"], h["positive"], h["negative"]): h for h in record.hardest}
    assert (0, 1, 2) in named  # the sample at 20° lies nearer to 0° than its positive at 50°
    assert all(0 < h["d_an"] - h["d_ap"] < MARGIN and h["mined"] for h in record.hardest_mined) and record.hardest_mined
    assert all(h["mined"] for h in TripletMiner("all", MARGIN, hardest_k=6)(x, labels).record.hardest)


@pytest.mark.parametrize("strategy", TRIPLET_STRATEGIES)
def test_the_anchor_view_gives_each_anchors_nearest_negative_against_its_farthest_positive(strategy):
    rules = RULES["never-negative"]
    x, labels = uneven_batch(14)
    view = TripletMiner(strategy, MARGIN, negative_rules=rules)(x, labels).record.anchors
    d = brute_distances(x)
    is_neg = brute_is_negative(labels, rules)
    y = labels.tolist()
    for a in range(len(y)):
        negatives = [n for n in range(len(y)) if is_neg(a, n)]
        positives = [p for p in range(len(y)) if p != a and y[p] == y[a]]
        assert int(view.nearest_negative[a]) == (min(negatives, key=lambda n: d[a][n]) if negatives else -1)
        if positives:
            assert float(view.d_ap[a]) == pytest.approx(max(d[a][p] for p in positives), abs=1e-12)
        else:
            assert math.isnan(float(view.d_ap[a]))
        met = {y[n] for n in negatives}
        assert {int(c) for c, m in zip(view.classes, view.negative_classes[a]) if m} == met
    gaps = [min(d[a][n] for n in range(len(y)) if is_neg(a, n)) - max(d[a][p] for p in range(len(y)) if p != a and y[p] == y[a])
            for a in range(len(y)) if any(is_neg(a, n) for n in range(len(y))) and y.count(y[a]) > 1]
    assert view.counts() == (len(gaps), sum(g < 0 for g in gaps), sum(g < MARGIN for g in gaps))


def test_hardest_triplets_use_batch_indices_without_dataset_indices_and_are_sorted():
    x, labels = uneven_batch(4)
    record = TripletMiner("all", MARGIN, hardest_k=8)(x, labels).record
    gaps = [h["d_an"] - h["d_ap"] for h in record.hardest]
    assert gaps == sorted(gaps) and len(gaps) == 8
    assert all(0 <= h[k] < len(labels) for h in record.hardest for k in ("anchor", "positive", "negative"))
    assert all(labels[h["anchor"]] == labels[h["positive"]] != labels[h["negative"]] for h in record.hardest)


def test_mining_record_is_json_ready():
    import json

    record = TripletMiner("semihard", MARGIN, hardest_k=4)(*uneven_batch(0)).record
    values = record.to_dict()
    assert json.loads(json.dumps(values)) == values
    assert len(values["hardest"]) == len(values["hardest_mined"]) == 4
    assert 0 < values["n_anchors"] == len(uneven_batch(0)[1]) - 1  # all but the single-sample class


@pytest.mark.parametrize("strategy", PAIR_STRATEGIES)
@pytest.mark.parametrize("rules_name", ["none", "never-negative", "same-group"])
def test_pair_miner_mines_the_same_pairs_as_brute_force(strategy, rules_name):
    rules = RULES[rules_name]
    x, labels = uneven_batch(6)
    d = brute_distances(x)
    is_neg = brute_is_negative(labels, rules)
    y = labels.tolist()
    b = len(y)
    pos = [(a, p) for a in range(b) for p in range(b) if a != p and y[a] == y[p]]
    neg = [(a, n) for a in range(b) for n in range(b) if is_neg(a, n)]
    if strategy == "all":
        exp_pos, exp_neg = set(pos), set(neg)
    elif strategy == "active":
        exp_pos, exp_neg = set(pos), {(a, n) for a, n in neg if d[a][n] < MARGIN}
    elif strategy == "hard":
        nearest = {a: min(d[a][n] for aa, n in neg if aa == a) for a, _ in neg}
        farthest = {a: max(d[a][p] for aa, p in pos if aa == a) for a, _ in pos}
        exp_pos = {(a, p) for a, p in pos if a in nearest and d[a][p] > nearest[a]}
        exp_neg = {(a, n) for a, n in neg if a in farthest and d[a][n] < farthest[a]}
    else:
        exp_pos = {max(((a, p) for aa, p in pos if aa == a), key=lambda t: d[t[0]][t[1]]) for a, _ in pos}
        exp_neg = {min(((a, n) for aa, n in neg if aa == a), key=lambda t: d[t[0]][t[1]]) for a, _ in neg}
    mined = PairMiner(strategy, MARGIN, negative_rules=rules)(x, labels)
    assert isinstance(mined, MinedPairs)
    assert set(zip(mined.anchors.tolist(), mined.positives.tolist())) == exp_pos
    assert set(zip(mined.negative_anchors.tolist(), mined.negatives.tolist())) == exp_neg
    record = mined.record
    assert record.n_valid == len(pos) + len(neg) and record.n_mined == len(exp_pos) + len(exp_neg)
    if exp_neg:
        assert record.mean_d_an == pytest.approx(sum(d[a][n] for a, n in exp_neg) / len(exp_neg))
        gaps = [h["d_an"] - h["d_ap"] for h in record.hardest_mined]
        assert gaps == sorted(gaps)
    triplets = [(a, p, n) for a, p in pos for aa, n in neg if aa == a]
    assert record.n_triplets == len(triplets)
    assert record.n_violating == sum(1 for a, p, n in triplets if d[a][n] - d[a][p] < MARGIN)
    hardest = sorted(triplets, key=lambda t: d[t[0]][t[2]] - d[t[0]][t[1]])[:20]
    kept = [(a, p) in exp_pos and (a, n) in exp_neg for a, p, n in hardest]  # both pairs kept at the anchor
    assert [((h["anchor"], h["positive"], h["negative"]), h["mined"]) for h in record.hardest] == list(zip(hardest, kept))


@pytest.mark.parametrize("strategy", ["hard", "semihard", "easy"])
def test_threshold_miners_keep_the_same_triplets_as_pytorch_metric_learning(strategy):
    from pytorch_metric_learning import miners

    x, labels = uneven_batch(7, sizes=(3, 4, 2, 5, 1, 4))
    ours = as_set(TripletMiner(strategy, MARGIN)(x, labels))
    a, p, n = miners.TripletMarginMiner(margin=MARGIN, type_of_triplets=strategy)(x, labels)
    assert ours == set(zip(a.tolist(), p.tolist(), n.tolist()))


def test_batch_hard_keeps_the_same_triplets_as_pytorch_metric_learning_batch_hard_miner():
    from pytorch_metric_learning import miners

    x, labels = uneven_batch(8, sizes=(3, 4, 2, 5, 1, 4))
    ours = as_set(TripletMiner("batch-hard", MARGIN)(x, labels))
    a, p, n = miners.BatchHardMiner()(x, labels)
    assert ours == set(zip(a.tolist(), p.tolist(), n.tolist()))


def test_semihard_keeps_only_negatives_inside_the_margin_beyond_the_positive():
    x, labels = uneven_batch(9)
    mined = TripletMiner("semihard", MARGIN)(x, labels)
    d = torch.cdist(torch.nn.functional.normalize(x), torch.nn.functional.normalize(x))
    d_ap, d_an = d[mined.anchors, mined.positives], d[mined.anchors, mined.negatives]
    assert len(mined) > 0 and bool(((d_ap < d_an) & (d_an < d_ap + MARGIN)).all())


@pytest.mark.parametrize("strategy", TRIPLET_STRATEGIES)
def test_one_class_batch_mines_nothing_and_records_no_means(strategy):
    x = torch.randn(6, 4)
    mined = TripletMiner(strategy, MARGIN)(x, torch.zeros(6, dtype=torch.long))
    assert len(mined) == 0 and mined.anchors.dtype == torch.long
    r = mined.record
    assert (r.n_valid, r.n_mined, r.active_fraction, r.mean_d_ap, r.mean_d_an, r.hardest) == (0, 0, 0.0, None, None, [])
    assert (r.n_triplets, r.violating_fraction, r.hardest_mined, r.anchors.counts()) == (0, None, [], (0, 0, 0))


@pytest.mark.parametrize("strategy", TRIPLET_STRATEGIES)
def test_batch_of_single_sample_classes_mines_nothing(strategy):
    mined = TripletMiner(strategy, MARGIN)(torch.randn(5, 4), torch.arange(5))
    assert len(mined) == 0 and mined.record.n_valid == 0


@pytest.mark.parametrize("strategy", TRIPLET_STRATEGIES)
def test_collapsed_embeddings_mine_finite_distances(strategy):
    x = torch.ones(8, 4)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    mined = TripletMiner(strategy, MARGIN)(x, labels)
    r = mined.record
    if r.n_mined:
        assert math.isfinite(r.mean_d_ap) and math.isfinite(r.mean_d_an)
        assert all(math.isfinite(h["d_an"]) for h in r.hardest)
    # all distances are 0: no negative is farther than a positive, none is nearer either
    assert (r.n_mined > 0) == (strategy in ("all", "batch-hard", "batch-semihard"))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_embeddings_mine_like_their_float32_copy(dtype):
    x, labels = uneven_batch(10, dtype=torch.float32)
    x = x.to(dtype)
    for strategy in TRIPLET_STRATEGIES:
        assert as_set(TripletMiner(strategy, MARGIN)(x, labels)) == as_set(TripletMiner(strategy, MARGIN)(x.float(), labels))


def test_mining_under_bf16_autocast_uses_float32_distances():
    x, labels = uneven_batch(11, dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under = TripletMiner("semihard", MARGIN)(x, labels)
    assert as_set(under) == as_set(TripletMiner("semihard", MARGIN)(x, labels))


def brute_npair_triplets(labels, rules=None):
    """The N-pair loss's triplets by its definition: each class's first two samples in batch order
    (a_i, p_i), and (a_i, p_i, p_j) for every other class's p_j that is a negative of a_i."""
    y = [int(v) for v in labels]
    is_neg = brute_is_negative(labels, rules)
    pairs = {}
    for i, c in enumerate(y):
        pairs.setdefault(c, []).append(i)
    pairs = [members[:2] for members in pairs.values() if len(members) >= 2]
    return {(a, p, pj) for a, p in pairs for _, pj in pairs if is_neg(a, pj)}


@pytest.mark.parametrize("rules_name", list(RULES))
@pytest.mark.parametrize("seed", [0, 1])
def test_npair_record_marks_the_triplets_the_npair_loss_trains_on(rules_name, seed):
    rules = RULES[rules_name]
    x, labels = uneven_batch(seed)
    expected = brute_npair_triplets(labels, rules)
    mined = NPairTriplets(MARGIN, negative_rules=rules, hardest_k=2000)(x, labels)
    assert expected and as_set(mined) == expected
    _, valid, d = brute_mine(x, labels, "all", MARGIN, rules)
    record = mined.record
    assert record.n_valid == len(valid) and record.n_mined == len(expected)
    active = [t for t in expected if d[t[0]][t[2]] < d[t[0]][t[1]] + MARGIN]
    assert record.active_fraction == pytest.approx(len(active) / len(expected), abs=1e-12)
    rows = record.hardest  # every valid triplet (hardest_k exceeds them), each marked whether the loss uses it
    assert len(rows) == len(valid)
    assert {(h["anchor"], h["positive"], h["negative"]) for h in rows if h["mined"]} == expected


def test_npair_record_leaves_out_exactly_the_samples_the_npair_loss_gives_no_gradient():
    x, labels = uneven_batch(4, sizes=(4, 4, 4, 4))
    x.requires_grad_(True)
    NPairLoss()(x, labels).backward()
    with_gradient = set(torch.nonzero(x.grad.abs().sum(dim=1) > 0).squeeze(1).tolist())
    mined = NPairTriplets(MARGIN)(x.detach(), labels)
    in_record = set(mined.anchors.tolist()) | set(mined.positives.tolist()) | set(mined.negatives.tolist())
    assert in_record == with_gradient and len(with_gradient) == 8  # two of each class's four


def test_miner_rejects_unknown_strategy_and_mismatched_labels():
    with pytest.raises(ValueError, match="strategy"):
        TripletMiner("hardest", MARGIN)
    with pytest.raises(ValueError, match="labels"):
        TripletMiner("all", MARGIN)(torch.randn(4, 3), torch.tensor([0, 1]))


def test_build_miner_maps_command_line_names():
    assert build_miner("none", 0.2) is None
    assert isinstance(build_miner("semihard", 0.2), TripletMiner)
    miner = build_miner("pair-active", 0.5)
    assert isinstance(miner, PairMiner) and miner.strategy == "active"


def test_mining_a_batch_of_512_stays_within_1_gb():
    """Each strategy on B=512, dim 128, in a fresh process: the peak resident memory grows by < 1 GB."""
    script = textwrap.dedent(
        """
        import resource, torch
        torch.set_num_threads(2)
        from retrieval.mining import TripletMiner, TRIPLET_STRATEGIES
        from retrieval.losses import TripletMarginLoss
        x = torch.randn(512, 128, requires_grad=True)
        labels = torch.arange(16).repeat_interleave(32)  # K = 32: 7.6 M valid triplets
        TripletMiner("batch-hard", 0.2)(x[:8], labels[:8])
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        for strategy in TRIPLET_STRATEGIES:
            mined = TripletMiner(strategy, 0.2)(x, labels)
            TripletMarginLoss(0.2)(x, labels, mined).backward()
            mined.record.hardest
        TripletMarginLoss(0.2)(x, labels).backward()
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    grown_mb = float(out.stdout.strip().splitlines()[-1])
    assert grown_mb < 1024


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_miners_on_cuda_match_cpu():
    x, labels = uneven_batch(12, dtype=torch.float32)
    for strategy in TRIPLET_STRATEGIES:
        on_gpu = TripletMiner(strategy, MARGIN)(x.cuda(), labels.cuda())
        assert on_gpu.anchors.device.type == "cuda"
        assert as_set(on_gpu) == as_set(TripletMiner(strategy, MARGIN)(x, labels))
        assert on_gpu.record.n_mined == len(on_gpu)
    before = torch.cuda.max_memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    big = torch.randn(512, 128, device="cuda")
    big_labels = torch.arange(16, device="cuda").repeat_interleave(32)
    for strategy in TRIPLET_STRATEGIES:
        TripletMiner(strategy, MARGIN)(big, big_labels).record.hardest
    assert torch.cuda.max_memory_allocated() < 2**30 or before is None


def test_mined_triplets_expose_their_pairs():
    x, labels = uneven_batch(13)
    mined = TripletMiner("all", MARGIN)(x, labels)
    assert isinstance(mined, MinedTriplets)
    a1, p, a2, n = mined.as_pairs()
    assert a1 is mined.anchors and a2 is mined.anchors and p is mined.positives and n is mined.negatives


def test_pair_active_keeps_the_same_pairs_as_pytorch_metric_learning_pair_margin_miner():
    """README's PML table: PairMiner("active", m) is PairMarginMiner(pos_margin=0, neg_margin=m) (up
    to positive pairs at distance exactly 0, which random batches do not hold)."""
    from pytorch_metric_learning import miners

    for seed in range(3):
        x, labels = uneven_batch(seed)
        ours = PairMiner("active", 1.0)(x, labels)  # a margin that random points' negatives fall inside
        a1, p, a2, n = miners.PairMarginMiner(pos_margin=0, neg_margin=1.0)(x, labels)
        assert set(zip(ours.anchors.tolist(), ours.positives.tolist())) == set(zip(a1.tolist(), p.tolist()))
        assert set(zip(ours.negative_anchors.tolist(), ours.negatives.tolist())) == set(zip(a2.tolist(), n.tolist()))
        assert len(ours.negatives) > 0
