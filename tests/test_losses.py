"""retrieval.losses: each loss against a brute-force loop over its DESIGN.md formula (float64, to
1e-6), gradcheck, parity with pytorch-metric-learning, miners' outputs, edge cases, precisions."""

import math

import pytest
from conftest import brute_is_negative
import torch

from retrieval.losses import (
    LOSSES,
    ContrastiveLoss,
    InfoNCELoss,
    LiftedStructureLoss,
    NCELoss,
    NPairLoss,
    TripletMarginLoss,
    build_loss,
)
from retrieval.mining import PAIR_STRATEGIES, TRIPLET_STRATEGIES, PairMiner, TripletMiner
from retrieval.negatives import NegativeRules

MARGIN = 0.4
TAU = 0.2


def uneven_batch(seed, sizes=(1, 2, 3, 5, 4, 2, 3), dim=6, dtype=torch.float64):
    """Random raw embeddings with several classes of uneven sizes (one a single sample), shuffled."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.cat([torch.full((s,), c) for c, s in enumerate(sizes)])
    labels = labels[torch.randperm(len(labels), generator=g)]
    return 3 * torch.randn(len(labels), dim, generator=g, dtype=dtype), labels


# ---- brute force: plain Python loops over the formulas ----------------------------------------


def unit(x):
    rows = [[float(v) for v in r] for r in x]
    return [[v / math.sqrt(sum(u * u for u in r)) for v in r] for r in rows]


def sim(u, i, j):
    return sum(a * b for a, b in zip(u[i], u[j]))


def dist(u, i, j):
    return math.sqrt(sum((a - b) ** 2 for a, b in zip(u[i], u[j])))


def pairs_of(labels, rules=None, mined=None, symmetric=False):
    """Ordered positive and negative pairs: all valid ones, or the valid ones among a miner's tuples."""
    y = [int(v) for v in labels]
    b = len(y)
    is_neg = brute_is_negative(labels, rules)
    is_pos = lambda a, p: a != p and y[a] == y[p]  # noqa: E731
    if mined is None:
        pos = [(a, p) for a in range(b) for p in range(b) if is_pos(a, p)]
        neg = [(a, n) for a in range(b) for n in range(b) if is_neg(a, n)]
        return pos, neg
    a1, p, a2, n = [t.tolist() for t in mined.as_pairs()]
    pos, neg = set(zip(a1, p)), set(zip(a2, n))
    if symmetric:
        pos |= {(j, i) for i, j in pos}
        neg |= {(j, i) for i, j in neg}
    return sorted(t for t in pos if is_pos(*t)), sorted(t for t in neg if is_neg(*t))


def brute_contrastive(x, labels, margin, rules=None, mined=None):
    u = unit(x)
    pos, neg = pairs_of(labels, rules, mined, symmetric=True)
    pull = sum(dist(u, i, j) ** 2 for i, j in pos) / len(pos) if pos else 0.0
    push = sum(max(0.0, margin - dist(u, i, j)) ** 2 for i, j in neg) / len(neg) if neg else 0.0
    return pull + push


def brute_triplet(x, labels, margin, squared=False, reduction="nonzero_mean", rules=None, mined=None):
    u = unit(x)
    d = (lambda i, j: dist(u, i, j) ** 2) if squared else (lambda i, j: dist(u, i, j))
    if mined is not None and hasattr(mined, "negatives") and not hasattr(mined, "negative_anchors"):
        triplets = list(zip(mined.anchors.tolist(), mined.positives.tolist(), mined.negatives.tolist()))
        if rules is not None:
            pos, neg = pairs_of(labels, rules)
            triplets = [t for t in triplets if (t[0], t[1]) in set(pos) and (t[0], t[2]) in set(neg)]
    else:
        pos, neg = pairs_of(labels, rules, mined)
        triplets = [(a, p, n) for a, p in pos for aa, n in neg if aa == a]
    losses = [max(0.0, d(a, p) - d(a, n) + margin) for a, p, n in triplets]
    if reduction == "mean":
        return sum(losses) / len(losses) if losses else 0.0
    nonzero = [v for v in losses if v > 0]
    return sum(nonzero) / len(nonzero) if nonzero else 0.0


def brute_lifted(x, labels, margin, rules=None, mined=None):
    u = unit(x)
    pos, neg = pairs_of(labels, rules, mined, symmetric=True)
    negatives_of = {}
    for a, n in neg:
        negatives_of.setdefault(a, []).append(n)
    pairs = [(i, j) for i, j in pos if i < j]
    if not pairs:
        return 0.0
    total = 0.0
    for i, j in pairs:
        s = sum(math.exp(margin - dist(u, i, k)) for k in negatives_of.get(i, [])) + sum(
            math.exp(margin - dist(u, j, l)) for l in negatives_of.get(j, [])  # noqa: E741
        )
        if s > 0:
            total += max(0.0, math.log(s) + dist(u, i, j)) ** 2
    return total / (2 * len(pairs))


def brute_npair(x, labels, l2_reg=0.0, rules=None, mined=None):
    u = unit(x)
    y = [int(v) for v in labels]
    pos, neg = pairs_of(labels, rules, mined)
    neg = set(neg)
    chosen = {}
    for a, p in sorted(pos):  # the first pair of each class in batch order
        chosen.setdefault(y[a], (a, p))
    tuples = list(chosen.values())
    if not tuples:
        return 0.0
    losses = []
    for a, p in tuples:
        others = [pj for aj, pj in tuples if pj != p and (a, pj) in neg]
        losses.append(math.log(1 + sum(math.exp(sim(u, a, pj) - sim(u, a, p)) for pj in others)))
    loss = sum(losses) / len(losses)
    if l2_reg:
        raws = [[float(v) for v in x[i]] for t in tuples for i in t]
        loss += l2_reg * sum(sum(v * v for v in r) for r in raws) / len(raws)
    return loss


def log_sigmoid(z):
    return -math.log1p(math.exp(-z)) if z > -30 else z - math.log1p(math.exp(z))


def brute_nce(x, labels, tau, rules=None, mined=None):
    u = unit(x)
    pos, neg = pairs_of(labels, rules, mined)
    _, all_neg = pairs_of(labels, rules)
    if not pos:
        return 0.0
    total = 0.0
    for a, p in pos:
        used = [n for aa, n in neg if aa == a]
        if not used:
            continue  # N = 0: the data class has posterior 1, loss 0
        m = len([n for aa, n in all_neg if aa == a])
        nq = len(used) / m
        logit = lambda v: sim(u, a, v) / tau - math.log(nq)  # noqa: E731
        total += -log_sigmoid(logit(p)) - sum(log_sigmoid(-logit(n)) for n in used)
    return total / len(pos)


def brute_infonce(x, labels, tau, rules=None, mined=None):
    u = unit(x)
    pos, neg = pairs_of(labels, rules, mined)
    if not pos:
        return 0.0
    total = 0.0
    for a, p in pos:
        num = math.exp(sim(u, a, p) / tau)
        den = num + sum(math.exp(sim(u, a, n) / tau) for aa, n in neg if aa == a)
        total += -math.log(num / den)
    return total / len(pos)


CASES = {
    "contrastive": (lambda rules: ContrastiveLoss(1.2, negative_rules=rules), lambda *a, **k: brute_contrastive(*a, 1.2, **k)),
    "triplet": (lambda rules: TripletMarginLoss(MARGIN, negative_rules=rules), lambda *a, **k: brute_triplet(*a, MARGIN, **k)),
    "triplet-squared-mean": (
        lambda rules: TripletMarginLoss(MARGIN, squared=True, reduction="mean", negative_rules=rules),
        lambda *a, **k: brute_triplet(*a, MARGIN, squared=True, reduction="mean", **k),
    ),
    "lifted": (lambda rules: LiftedStructureLoss(MARGIN, negative_rules=rules), lambda *a, **k: brute_lifted(*a, MARGIN, **k)),
    "npair": (lambda rules: NPairLoss(negative_rules=rules), lambda *a, **k: brute_npair(*a, **k)),
    "npair-l2": (lambda rules: NPairLoss(0.01, negative_rules=rules), lambda *a, **k: brute_npair(*a, 0.01, **k)),
    "nce": (lambda rules: NCELoss(TAU, negative_rules=rules), lambda *a, **k: brute_nce(*a, TAU, **k)),
    "infonce": (lambda rules: InfoNCELoss(TAU, negative_rules=rules), lambda *a, **k: brute_infonce(*a, TAU, **k)),
}

RULES = {
    "never-negative": NegativeRules(never_negative=[(0, 1), (2, 3), (4, 6)]),
    "same-group": NegativeRules(class_groups=[0, 0, 1, 1, 1, 2, 0], negatives="same-group"),
    "prefer-same-group": NegativeRules(never_negative=[(2, 3)], class_groups=[0, 0, 1, 1, 1, 2, 0], negatives="prefer-same-group"),
}


def close(value, expected):
    assert math.isfinite(value)
    assert abs(value - expected) <= 1e-6 * max(1.0, abs(expected)), (value, expected)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("name", list(CASES))
def test_loss_equals_brute_force_formula(name, seed):
    make, brute = CASES[name]
    x, labels = uneven_batch(seed)
    close(make(None)(x, labels).item(), brute(x, labels))


@pytest.mark.parametrize("rules_name", list(RULES))
@pytest.mark.parametrize("name", list(CASES))
def test_loss_with_negative_rules_equals_brute_force_formula(name, rules_name):
    make, brute = CASES[name]
    rules = RULES[rules_name]
    x, labels = uneven_batch(4)
    close(make(rules)(x, labels).item(), brute(x, labels, rules=rules))


@pytest.mark.parametrize("strategy", TRIPLET_STRATEGIES)
@pytest.mark.parametrize("name", list(CASES))
def test_loss_on_triplet_miner_output_equals_brute_force_over_the_mined_tuples(name, strategy):
    make, brute = CASES[name]
    x, labels = uneven_batch(5, sizes=(4, 3, 5, 2, 1, 4))
    mined = TripletMiner(strategy, MARGIN)(x, labels)
    close(make(None)(x, labels, mined).item(), brute(x, labels, mined=mined))


@pytest.mark.parametrize("strategy", ["all", "semihard", "batch-semihard"])
@pytest.mark.parametrize("name", ["triplet", "contrastive", "nce", "lifted"])
def test_loss_with_rules_filters_a_rule_free_miners_output(name, strategy):
    make, brute = CASES[name]
    rules = RULES["never-negative"]
    x, labels = uneven_batch(6)
    mined = TripletMiner(strategy, MARGIN)(x, labels)
    close(make(rules)(x, labels, mined).item(), brute(x, labels, rules=rules, mined=mined))


@pytest.mark.parametrize("strategy", PAIR_STRATEGIES)
@pytest.mark.parametrize("name", list(CASES))
def test_loss_on_pair_miner_output_equals_brute_force_over_the_mined_pairs(name, strategy):
    make, brute = CASES[name]
    x, labels = uneven_batch(7, sizes=(4, 3, 5, 2, 1, 4))
    mined = PairMiner(strategy, MARGIN)(x, labels)
    close(make(None)(x, labels, mined).item(), brute(x, labels, mined=mined))


def test_loss_accepts_a_pytorch_metric_learning_index_tuple():
    x, labels = uneven_batch(8)
    mined = TripletMiner("semihard", MARGIN)(x, labels)
    as_tuple = (mined.anchors, mined.positives, mined.negatives)
    loss = TripletMarginLoss(MARGIN)
    close(loss(x, labels, as_tuple).item(), loss(x, labels, mined).item())
    close(ContrastiveLoss(MARGIN)(x, labels, mined.as_pairs()).item(), brute_contrastive(x, labels, MARGIN, mined=mined))


@pytest.mark.parametrize("name", list(CASES))
def test_gradient_passes_gradcheck(name):
    make, _ = CASES[name]
    x, labels = uneven_batch(9, sizes=(3, 2, 3, 1), dim=4)
    loss = make(None)
    assert torch.autograd.gradcheck(lambda e: loss(e, labels), (x.clone().requires_grad_(True),), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("strategy", ["semihard", "all", "batch-hard"])
def test_triplet_gradient_on_mined_triplets_passes_gradcheck(strategy):
    x, labels = uneven_batch(10, sizes=(3, 2, 3, 1), dim=4)
    mined = TripletMiner(strategy, 0.8)(x, labels)
    loss = TripletMarginLoss(0.8)
    assert torch.autograd.gradcheck(lambda e: loss(e, labels, mined), (x.clone().requires_grad_(True),), eps=1e-6, atol=1e-5)


# ---- parity with pytorch-metric-learning --------------------------------------------------------


@pytest.mark.parametrize("strategy", ["all", "hard", "semihard", "easy"])
def test_triplet_loss_with_miner_equals_pytorch_metric_learning(strategy):
    from pytorch_metric_learning import losses, miners

    x, labels = uneven_batch(11, sizes=(4, 3, 5, 2, 1, 4, 3), dim=8)
    ours = TripletMarginLoss(MARGIN)(x, labels, TripletMiner(strategy, MARGIN)(x, labels))
    pml_miner = miners.TripletMarginMiner(margin=MARGIN, type_of_triplets=strategy)
    theirs = losses.TripletMarginLoss(margin=MARGIN)(x, labels, pml_miner(x, labels))
    close(ours.item(), theirs.item())


def test_triplet_loss_with_batch_hard_miner_equals_pytorch_metric_learning():
    from pytorch_metric_learning import losses, miners

    x, labels = uneven_batch(12, sizes=(4, 3, 5, 2, 1, 4, 3), dim=8)
    ours = TripletMarginLoss(MARGIN)(x, labels, TripletMiner("batch-hard", MARGIN)(x, labels))
    theirs = losses.TripletMarginLoss(margin=MARGIN)(x, labels, miners.BatchHardMiner()(x, labels))
    close(ours.item(), theirs.item())


def test_triplet_loss_without_miner_equals_pytorch_metric_learning_all_triplets():
    from pytorch_metric_learning import losses

    x, labels = uneven_batch(13, dim=8)
    close(TripletMarginLoss(MARGIN)(x, labels).item(), losses.TripletMarginLoss(margin=MARGIN)(x, labels).item())


def test_infonce_equals_pytorch_metric_learning_ntxent():
    from pytorch_metric_learning import losses

    for seed in range(3):
        x, labels = uneven_batch(seed, dim=8)
        close(InfoNCELoss(TAU)(x, labels).item(), losses.NTXentLoss(temperature=TAU)(x, labels).item())


def test_lifted_structure_equals_pytorch_metric_learning_with_zero_pos_margin():
    from pytorch_metric_learning import losses

    for seed in range(3):
        x, labels = uneven_batch(seed, dim=8)
        theirs = losses.LiftedStructureLoss(neg_margin=MARGIN, pos_margin=0)(x, labels)
        close(LiftedStructureLoss(MARGIN)(x, labels).item(), theirs.item())


def test_npair_equals_pytorch_metric_learning_npairs():
    from pytorch_metric_learning import losses

    for seed in range(3):
        x, labels = uneven_batch(seed, dim=8)
        close(NPairLoss()(x, labels).item(), losses.NPairsLoss()(x, labels).item())


# ---- edge cases ---------------------------------------------------------------------------------


def _backward_is_finite(loss_value, x):
    loss_value.backward()
    return x.grad is not None and bool(torch.isfinite(x.grad).all())


@pytest.mark.parametrize("name", list(CASES))
def test_one_class_batch_gives_finite_loss_and_gradient(name):
    make, brute = CASES[name]
    x = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    labels = torch.zeros(6, dtype=torch.long)
    value = make(None)(x, labels)
    assert _backward_is_finite(value, x)
    close(value.item(), brute(x.detach(), labels))  # only the positive terms (contrastive pull, N-pair l2)


@pytest.mark.parametrize("name", list(CASES))
def test_batch_of_single_sample_classes_gives_zero_or_only_negative_terms(name):
    make, brute = CASES[name]
    x = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    labels = torch.arange(5)
    value = make(None)(x, labels)
    assert _backward_is_finite(value, x)
    close(value.item(), brute(x.detach(), labels))


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("constant", [0.0, 1.0])
def test_collapsed_embeddings_give_finite_loss_and_gradient(name, constant):
    """What happens if the network outputs constant output? A finite loss and finite gradients."""
    make, _ = CASES[name]
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 2, 3])
    for dtype in (torch.float32, torch.float64):
        x = torch.full((8, 16), constant, dtype=dtype, requires_grad=True)
        value = make(None)(x, labels)
        assert math.isfinite(value.item())
        assert _backward_is_finite(value, x)
        for strategy in TRIPLET_STRATEGIES:
            x.grad = None
            mined = TripletMiner(strategy, MARGIN)(x, labels)
            value = make(None)(x, labels, mined)
            assert math.isfinite(value.item()) and _backward_is_finite(value, x)


@pytest.mark.parametrize("name", list(CASES))
def test_empty_mining_result_gives_zero_loss_with_a_gradient(name):
    make, _ = CASES[name]
    x, labels = uneven_batch(14)
    x.requires_grad_(True)
    mined = TripletMiner("easy", 10.0)(x, labels)  # no negative is 10 farther than a positive
    assert len(mined) == 0
    value = make(None)(x, labels, mined)
    assert value.item() == 0.0 and value.requires_grad
    assert _backward_is_finite(value, x) and float(x.grad.abs().max()) == 0.0


@pytest.mark.parametrize("name", list(CASES))
def test_batch_whose_classes_are_all_never_negatives_has_no_negative_term(name):
    make, brute = CASES[name]
    rules = NegativeRules(never_negative=[(0, 1)])
    x = torch.randn(6, 4, dtype=torch.float64)
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    close(make(rules)(x, labels).item(), brute(x, labels, rules=rules))
    if name.startswith(("triplet", "lifted", "nce", "infonce", "npair")) and name != "npair-l2":
        assert make(rules)(x, labels).item() == 0.0


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", list(CASES))
def test_half_precision_input_is_computed_in_float32(name, dtype):
    make, _ = CASES[name]
    x, labels = uneven_batch(15, dtype=torch.float32)
    half = x.to(dtype).requires_grad_(True)
    value = make(None)(half, labels)
    assert value.dtype == torch.float32
    torch.testing.assert_close(value, make(None)(half.detach().float(), labels), rtol=1e-5, atol=1e-5)
    value.backward()
    assert half.grad.dtype == dtype and torch.isfinite(half.grad.float()).all()


@pytest.mark.parametrize("name", list(CASES))
def test_loss_under_bf16_autocast_equals_float32(name):
    make, _ = CASES[name]
    x, labels = uneven_batch(16, dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under = make(None)(x, labels)
    assert under.dtype == torch.float32
    torch.testing.assert_close(under, make(None)(x, labels))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", list(CASES))
def test_loss_on_cuda_equals_cpu(name):
    make, _ = CASES[name]
    x, labels = uneven_batch(17, dtype=torch.float32)
    on_gpu = make(None)(x.cuda(), labels.cuda())
    torch.testing.assert_close(on_gpu.cpu(), make(None)(x, labels), rtol=1e-4, atol=1e-5)
    mined = TripletMiner("semihard", MARGIN)(x.cuda(), labels.cuda())
    torch.testing.assert_close(make(None)(x.cuda(), labels.cuda(), mined).cpu(), make(None)(x, labels, TripletMiner("semihard", MARGIN)(x, labels)), rtol=1e-4, atol=1e-5)


def test_build_loss_maps_command_line_names_to_the_six_losses():
    assert set(LOSSES) == {"contrastive", "triplet", "lifted", "npair", "nce", "infonce"}
    assert build_loss("triplet", margin=0.3).margin == 0.3
    assert build_loss("infonce", temperature=0.05).temperature == 0.05
    with pytest.raises(ValueError, match="loss must be one of"):
        build_loss("arcface")


def test_every_loss_docstring_states_its_formula():
    for cls in LOSSES.values():
        doc = cls.__doc__
        assert "::" in doc and any(sym in doc for sym in ("max(0", "log", "mean")), cls


def test_infonce_on_mined_pairs_equals_pytorch_metric_learning_ntxent_on_the_same_indices():
    """README's PML table: InfoNCE equals NTXent on mined pairs too (the same (a1, p, a2, n) given to both)."""
    from pytorch_metric_learning import losses

    for seed in range(3):
        x, labels = uneven_batch(seed, dim=8)
        mined = PairMiner("active", 1.0)(x, labels)
        ours = InfoNCELoss(TAU)(x, labels, mined)
        theirs = losses.NTXentLoss(temperature=TAU)(x, labels, indices_tuple=mined.as_pairs())
        assert len(mined.anchors) > 0 and len(mined.negatives) > 0
        close(ours.item(), theirs.item())
