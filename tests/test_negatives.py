"""retrieval.negatives: never-negative pairs and class groups, honoured by every miner and loss."""

import csv
from pathlib import Path

import pytest
import torch

from retrieval.losses import LOSSES, build_loss
from retrieval.mining import PAIR_STRATEGIES, TRIPLET_STRATEGIES, PairMiner, TripletMiner
from retrieval.negatives import NegativeRules, negative_mask, positive_mask

GROCERY_CLASSES = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "grocery" / "classes.csv"


def test_default_negatives_are_all_other_classes_and_positives_exclude_self():
    labels = torch.tensor([0, 0, 1, 2])
    assert negative_mask(labels).tolist() == [
        [False, False, True, True],
        [False, False, True, True],
        [True, True, False, True],
        [True, True, True, False],
    ]
    assert positive_mask(labels).tolist() == [
        [False, True, False, False],
        [True, False, False, False],
        [False, False, False, False],
        [False, False, False, False],
    ]
    assert NegativeRules().is_default and NegativeRules().negative_mask(labels).equal(negative_mask(labels))


def test_never_negative_pair_is_excluded_in_both_directions():
    labels = torch.tensor([0, 1, 2, 1])
    mask = NegativeRules(never_negative=[(1, 0)]).negative_mask(labels)
    assert not mask[0, 1] and not mask[1, 0] and not mask[0, 3] and not mask[3, 0]
    assert mask[0, 2] and mask[1, 2] and mask[2, 1]


def test_same_group_keeps_only_negatives_of_the_anchors_group():
    labels = torch.tensor([0, 1, 2, 3])
    rules = NegativeRules(class_groups=[0, 0, 1, 1], negatives="same-group")
    assert rules.negative_mask(labels).tolist() == [
        [False, True, False, False],
        [True, False, False, False],
        [False, False, False, True],
        [False, False, True, False],
    ]


def test_prefer_same_group_falls_back_to_every_negative_where_the_group_has_none_in_the_batch():
    labels = torch.tensor([0, 1, 2])  # class 2 is alone in group 1
    rules = NegativeRules(class_groups=[0, 0, 1], negatives="prefer-same-group")
    mask = rules.negative_mask(labels)
    assert mask[0].tolist() == [False, True, False]
    assert mask[2].tolist() == [True, True, False]


def test_classes_without_negatives_are_those_alone_in_their_group_or_never_negative_with_the_rest():
    assert NegativeRules().classes_without_negatives(3) == []
    assert NegativeRules(class_groups=[0, 0, 1, 2, 2], negatives="same-group").classes_without_negatives(5) == [2]
    same = NegativeRules(class_groups=[0, 0, 1, 2, 2], never_negative=[(3, 4)], negatives="same-group")
    assert same.classes_without_negatives(5) == [2, 3, 4]
    assert NegativeRules(class_groups=[0, 0, 1], negatives="prefer-same-group").classes_without_negatives(3) == []
    assert NegativeRules(never_negative=[(0, 1), (0, 2)]).classes_without_negatives(3) == [0]


def test_group_modes_need_groups_and_labels_inside_them():
    with pytest.raises(ValueError, match="class_groups"):
        NegativeRules(negatives="same-group")
    with pytest.raises(ValueError, match="negatives must be one of"):
        NegativeRules(class_groups=[0], negatives="nearest")
    with pytest.raises(ValueError, match="class indices"):
        NegativeRules(class_groups=[0, 0], negatives="same-group").negative_mask(torch.tensor([0, 5]))


def _grocery_groups() -> tuple[list[str], dict[str, str]]:
    with open(GROCERY_CLASSES, newline="") as f:
        rows = list(csv.DictReader(f))
    names = sorted(r["class_name"] for r in rows)
    return names, {r["class_name"]: r["coarse_class_name"] for r in rows}


@pytest.mark.skipif(not GROCERY_CLASSES.exists(), reason="needs ../shared/datasets/grocery")
def test_same_group_with_grocery_coarse_classes_pits_apple_varieties_against_each_other():
    names, groups = _grocery_groups()
    rules = NegativeRules.from_names(names, class_groups=groups, negatives="same-group")
    granny, pink, banana = names.index("Granny-Smith"), names.index("Pink-Lady"), names.index("Banana")
    labels = torch.tensor([granny, granny, pink, pink, banana, banana])
    mask = rules.negative_mask(labels)
    assert mask[0, 2] and mask[2, 0]  # two apples: a hard negative
    assert not mask[0, 4] and not mask[4, 0]  # apple vs banana: not used
    mined = TripletMiner("all", 0.2, negative_rules=rules)(torch.randn(6, 8), labels)
    assert set(labels[mined.negatives].tolist()) <= {granny, pink}


def test_from_names_maps_never_negative_names_and_rejects_unknown_ones():
    rules = NegativeRules.from_names(["alice", "bob", "carol"], never_negative=[("alice", "carol")])
    assert rules.never_negative == [(0, 2)]
    with pytest.raises(ValueError, match="dave"):
        NegativeRules.from_names(["alice"], never_negative=[("alice", "dave")])


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 3, 3])
    x = torch.randn(len(labels), 8, generator=g)
    x[3:6] = x[0:3] + 0.01 * torch.randn(3, 8, generator=g)  # class 1 sits on class 0: its hardest negatives
    return x, labels


@pytest.mark.parametrize("strategy", TRIPLET_STRATEGIES)
def test_every_triplet_miner_excludes_never_negative_pairs(strategy):
    x, labels = _batch()
    rules = NegativeRules(never_negative=[(0, 1)])
    mined = TripletMiner(strategy, 0.5, negative_rules=rules)(x, labels)
    pairs = set(zip(labels[mined.anchors].tolist(), labels[mined.negatives].tolist()))
    assert not pairs & {(0, 1), (1, 0)}
    assert not {(int(labels[h["anchor"]]), int(labels[h["negative"]])) for h in mined.record.hardest} & {(0, 1), (1, 0)}
    unruled = TripletMiner(strategy, 0.5)(x, labels)
    if strategy in ("all", "hard", "batch-hard"):  # without the rule those pairs are mined
        assert set(zip(labels[unruled.anchors].tolist(), labels[unruled.negatives].tolist())) & {(0, 1), (1, 0)}


@pytest.mark.parametrize("strategy", PAIR_STRATEGIES)
def test_every_pair_miner_excludes_never_negative_pairs(strategy):
    x, labels = _batch()
    mined = PairMiner(strategy, 0.5, negative_rules=NegativeRules(never_negative=[(0, 1)]))(x, labels)
    pairs = set(zip(labels[mined.negative_anchors].tolist(), labels[mined.negatives].tolist()))
    assert not pairs & {(0, 1), (1, 0)}


@pytest.mark.parametrize("name", list(LOSSES))
def test_every_loss_ignores_the_distance_between_never_negative_classes(name):
    """A batch of classes 0 and 1 declared never negative has no negative term, wherever class 1
    lies (even on top of class 0); without the rule, class 1 on top of class 0 costs loss."""
    loss = build_loss(name, margin=0.5, temperature=0.1, negative_rules=NegativeRules(never_negative=[(0, 1)]))
    plain = build_loss(name, margin=0.5, temperature=0.1)
    g = torch.Generator().manual_seed(1)
    labels = torch.tensor([0, 0, 1, 1])
    base = torch.randn(4, 6, generator=g, dtype=torch.float64)
    moved = base.clone()
    moved[2:] = base[:2] + 1e-3 * torch.randn(2, 6, generator=g, dtype=torch.float64)  # class 1 on top of class 0
    ruled = [loss(e, labels).item() for e in (base, moved)]
    plain_values = [plain(e, labels).item() for e in (base, moved)]
    within = [_positive_only(name, e, labels) for e in (base, moved)]
    assert ruled == pytest.approx(within, abs=1e-9)
    assert plain_values[1] != pytest.approx(within[1], abs=1e-6)


def _positive_only(name, embeddings, labels):
    """The loss when no pair is a negative: only the contrastive pull term is left."""
    if name != "contrastive":
        return 0.0
    x = torch.nn.functional.normalize(embeddings)
    return float(((x[0] - x[1]).norm() ** 2 + (x[2] - x[3]).norm() ** 2) / 2)


def test_rules_are_applied_on_the_embeddings_device():
    rules = NegativeRules(never_negative=[(0, 1)], class_groups=[0, 0, 1], negatives="prefer-same-group")
    labels = torch.tensor([0, 1, 2, 2])
    assert rules.negative_mask(labels).device == labels.device
    if torch.cuda.is_available():
        assert rules.negative_mask(labels.cuda()).cpu().equal(rules.negative_mask(labels))
