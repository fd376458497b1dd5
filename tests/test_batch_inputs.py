"""What the losses, the miners and the metrics accept (retrieval.batch_inputs): a mistake is one clear
exception, never a torch message from deep inside nor a silent change of meaning."""

import logging

import numpy as np
import pytest
import torch

from retrieval.evaluate import retrieval_metrics
from retrieval.losses import (ContrastiveLoss, InfoNCELoss, LiftedStructureLoss, NCELoss, NPairLoss,
                              TripletMarginLoss)
from retrieval.mining import PairMiner, TripletMiner
from retrieval.negatives import NegativeRules
from retrieval.verification import pair_distances

LOSSES = [ContrastiveLoss(0.5), TripletMarginLoss(0.2), LiftedStructureLoss(0.5), NPairLoss(), NCELoss(0.1), InfoNCELoss(0.1)]
MINERS = [*(TripletMiner(s, 0.2) for s in TripletMiner.strategies), *(PairMiner(s, 0.2) for s in PairMiner.strategies)]


@pytest.mark.parametrize("loss", LOSSES, ids=lambda loss: type(loss).__name__)
def test_class_names_and_integer_valued_floats_are_the_ids_they_name_and_a_fraction_is_refused(loss):
    torch.manual_seed(0)
    x = torch.randn(6, 4)
    ids = torch.tensor([0, 0, 1, 1, 2, 2])
    expected = loss(x, ids)
    for labels in (["a", "a", "b", "b", "c", "c"], np.array(["x", "x", "y", "y", "z", "z"]), ids.float(), ids.tolist(),
                   ids.numpy().astype(np.uint64), ids.numpy().astype(np.uint32)):  # uint64 was "got dtype torch.uint64"
        assert torch.equal(loss(x, labels), expected), labels
    with pytest.raises(ValueError, match="integer class ids, got 0.5"):  # .long() made it 0: classes 0 and 0.5 merged
        loss(x, torch.tensor([0.0, 0.5, 1.0, 1.0, 2.0, 2.0]))
    with pytest.raises(ValueError, match="got None"):
        loss(x, [None, 0, 1, 1, 2, 2])
    with pytest.raises(TypeError, match="numpy.ndarray: torch.as_tensor"):
        loss(x.numpy(), ids)


@pytest.mark.parametrize("loss", LOSSES, ids=lambda loss: type(loss).__name__)
def test_an_empty_batch_is_a_loss_of_0_with_a_gradient(loss):
    x = torch.randn(0, 8, requires_grad=True)
    value = loss(x, torch.zeros(0, dtype=torch.long))
    value.backward()
    assert value.item() == 0 and x.grad is not None


@pytest.mark.parametrize("miner", MINERS, ids=repr)
def test_a_miner_takes_names_refuses_fractions_and_mines_nothing_from_an_empty_batch(miner):
    torch.manual_seed(0)
    x = torch.randn(6, 4)
    by_id = miner(x, [0, 0, 1, 1, 2, 2])
    by_name = miner(x, ["b", "b", "a", "a", "c", "c"])  # other ids, the same classes
    assert [t.tolist() for t in by_id.as_pairs()] == [t.tolist() for t in by_name.as_pairs()]
    with pytest.raises(ValueError, match="integer class ids"):
        miner(x, torch.tensor([0.0, 0.5, 1.0, 1.0, 2.0, 2.0]))
    empty = miner(torch.randn(0, 8), [])
    assert all(len(t) == 0 for t in empty.as_pairs()) and empty.record.n_mined == 0 and empty.record.mean_d_ap is None


@pytest.mark.parametrize("make, name", [
    (lambda v: TripletMarginLoss(v), "margin"), (lambda v: ContrastiveLoss(v), "margin"),
    (lambda v: LiftedStructureLoss(v), "margin"), (lambda v: NPairLoss(l2_reg=v), "l2_reg"),
    (lambda v: TripletMiner("semihard", v), "margin"), (lambda v: PairMiner("active", v), "margin"),
])
def test_a_margin_or_weight_is_a_finite_number_at_least_0(make, name):
    for bad in (-0.5, float("nan"), float("inf"), "0.2", None):
        with pytest.raises(ValueError, match=name):
            make(bad)
    make(0)


def test_a_temperature_is_a_finite_number_above_0():
    for bad in (0, -1, float("inf"), "0.1"):
        with pytest.raises(ValueError, match="temperature"):
            InfoNCELoss(bad)
        with pytest.raises(ValueError, match="temperature"):
            NCELoss(bad)


def test_the_triplet_loss_drops_invalid_triplets_given_by_hand_as_every_loss_does():
    """(a, a, n), a positive of another class, a negative of the anchor's class: none is a triplet.
    The triplet loss trained on them unless negative rules were given; the pair losses never did."""
    torch.manual_seed(0)
    x, y = torch.randn(6, 4), torch.tensor([0, 0, 1, 1, 2, 2])
    invalid = (torch.tensor([0, 0, 0]), torch.tensor([0, 2, 1]), torch.tensor([1, 1, 1]))
    assert TripletMarginLoss(0.2)(x, y, invalid).item() == 0
    assert TripletMarginLoss(0.2)(x, y, invalid) == TripletMarginLoss(0.2, negative_rules=NegativeRules())(x, y, invalid)
    one = ([0], [1], [4])  # index lists, as a user writes them by hand
    assert TripletMarginLoss(0.2)(x, y, one) == TripletMarginLoss(0.2)(x, y, tuple(torch.tensor(i) for i in one))
    for loss in (ContrastiveLoss(0.5), InfoNCELoss(0.1)):  # lists were an AttributeError there
        assert torch.equal(loss(x, y, one), loss(x, y, tuple(torch.tensor(i) for i in one)))


def test_metrics_and_pair_distances_refuse_missing_labels_and_match_1_with_1_0():
    rng = np.random.default_rng(0)
    e, labels = rng.normal(size=(10, 4)), np.repeat(np.arange(5), 2)
    with pytest.raises(ValueError, match="10 of 10 items have no label"):
        retrieval_metrics(e, [None] * 10)  # an unlabelled gallery scored a perfect 1.0
    with pytest.raises(ValueError, match="no label"):
        pair_distances(e, [None] * 10)
    as_floats = retrieval_metrics(e, labels, e, labels.astype(float))
    assert as_floats == retrieval_metrics(e, labels, e, labels), "1 and 1.0 are one class"


def test_a_class_group_name_that_is_no_class_is_warned_of(caplog):
    with caplog.at_level(logging.WARNING, logger="retrieval"):
        rules = NegativeRules.from_names(["A1", "A2", "B"], class_groups={"A1": "A", "A3": "A"}, negatives="same-group")
    assert rules.class_groups == [0, 1, 2]
    assert any("1 classes that are not among the class names, ignored: A3" in r.getMessage() for r in caplog.records)


def _rules_by_name():
    names = ["Golden-Delicious", "Pink-Lady", "Royal-Gala", "Banana", "Kiwi"]
    groups = {"Golden-Delicious": "Apple", "Pink-Lady": "Apple", "Royal-Gala": "Apple"}
    return names, [NegativeRules.from_names(names, class_groups=groups, negatives=mode) for mode in ("same-group", "prefer-same-group")] \
        + [NegativeRules.from_names(names, never_negative=[("Banana", "Pink-Lady"), ("Kiwi", "Royal-Gala")])]


@pytest.mark.parametrize("make", [lambda r: TripletMarginLoss(0.2, negative_rules=r), lambda r: ContrastiveLoss(0.5, negative_rules=r),
                                  lambda r: LiftedStructureLoss(0.5, negative_rules=r), lambda r: NCELoss(0.1, negative_rules=r),
                                  lambda r: InfoNCELoss(0.1, negative_rules=r), lambda r: NPairLoss(negative_rules=r)],
                         ids=["triplet", "contrastive", "lifted", "nce", "infonce", "npair"])
def test_class_names_with_rules_by_name_are_the_classes_the_rules_name(make):
    """Names were numbered in the batch's sorted order while the rules read labels as places in their
    class names: a group or a never-negative pair then applied to other classes, silently."""
    names, all_rules = _rules_by_name()
    rng = np.random.default_rng(1)
    for rules in all_rules:
        for _ in range(5):
            batch = [names[i] for i in np.repeat(rng.choice(len(names), size=3, replace=False), 2)]
            x = torch.randn(6, 8, generator=torch.Generator().manual_seed(int(rng.integers(1000))))
            ids = torch.tensor([names.index(n) for n in batch])
            assert torch.equal(make(rules)(x, batch), make(rules)(x, ids)), (rules.negatives, batch)


@pytest.mark.parametrize("miner", ["semihard", "hard", "all", "batch-hard", "batch-semihard", "easy", "pair-active", "pair-hard"])
def test_a_miner_with_rules_by_name_takes_class_names_as_the_rules_name_them(miner):
    names, all_rules = _rules_by_name()
    rng = np.random.default_rng(2)
    for rules in all_rules:
        make = (lambda: PairMiner(miner[5:], 0.2, negative_rules=rules)) if miner.startswith("pair-") else \
            (lambda: TripletMiner(miner, 0.2, negative_rules=rules))
        for _ in range(5):
            batch = [names[i] for i in np.repeat(rng.choice(len(names), size=3, replace=False), 2)]
            x = torch.randn(6, 8, generator=torch.Generator().manual_seed(int(rng.integers(1000))))
            by_id, by_name = make()(x, [names.index(n) for n in batch]), make()(x, batch)
            assert [t.tolist() for t in by_id.as_pairs()] == [t.tolist() for t in by_name.as_pairs()], (rules.negatives, batch)


def test_class_names_with_rules_by_index_or_a_class_the_rules_do_not_name_are_refused():
    x = torch.randn(4, 8)
    by_index = NegativeRules(never_negative=[(0, 1)])
    for call in (TripletMarginLoss(0.2, negative_rules=by_index), TripletMiner("all", 0.2, negative_rules=by_index)):
        with pytest.raises(ValueError, match="NegativeRules name classes by index: build them with NegativeRules.from_names"):
            call(x, ["a", "a", "b", "b"])
    _, (rules, *_) = _rules_by_name()
    with pytest.raises(ValueError, match="1 class\\(es\\) that the NegativeRules' class names do not hold: 'Fig'"):
        TripletMarginLoss(0.2, negative_rules=rules)(x, ["Banana", "Banana", "Fig", "Fig"])
    assert TripletMarginLoss(0.2, negative_rules=NegativeRules())(x, ["a", "a", "b", "b"]) == TripletMarginLoss(0.2)(x, [0, 0, 1, 1])


@pytest.mark.parametrize("loss", LOSSES, ids=lambda loss: type(loss).__name__)
def test_hand_given_indices_out_of_range_fractional_or_of_unequal_lengths_are_refused(loss):
    """-1 wrapped round to the last row, 0.5 was cut to 0 and lists of lengths 2, 1, 1 broadcast, each
    giving a loss of something else than what was written."""
    torch.manual_seed(0)
    x, y = torch.randn(8, 4), torch.arange(8) % 2
    for mined, message in [(([0], [2], [-1]), r"must lie in \[0, 8\).*got -1"), (([0], [2], [8]), "got 8"),
                           (([0.5], [2.0], [1.0]), "integer batch indices"), (([0, 2], [2], [1]), "equal length, got 2, 1, 1"),
                           (([0], [2], [0, 1], [1]), "a1, p and a2, n must be of equal length"), (([[0]], [[2]], [[1]]), "1-D")]:
        with pytest.raises(ValueError, match=message):
            loss(x, y, tuple(torch.tensor(i) for i in mined))
    assert torch.equal(loss(x, y, ([0, 2], [2, 4], [1, 3])), loss(x, y, (torch.tensor([0, 2]), torch.tensor([2, 4]), torch.tensor([1, 3]))))


@pytest.mark.parametrize("miner", MINERS, ids=repr)
def test_a_miners_output_for_another_batch_is_refused(miner):
    torch.manual_seed(0)
    other = miner(torch.randn(16, 4), torch.arange(16) % 2)
    assert len(other.as_pairs()[0]) > 0, "something mined, to mis-index"
    for loss in (TripletMarginLoss(0.2), ContrastiveLoss(0.5), InfoNCELoss(0.1)):
        with pytest.raises(ValueError, match="mined on a batch of 16 rows, the embeddings have 8"):
            loss(torch.randn(8, 4), torch.arange(8) % 2, other)


def test_metrics_and_pair_distances_refuse_embeddings_that_hold_nan_or_inf():
    rng = np.random.default_rng(0)
    e, labels = rng.normal(size=(40, 8)).astype(np.float32), np.arange(40) % 5
    e[[3, 7]] = np.nan
    e[9, 0] = np.inf
    for call in (lambda: retrieval_metrics(e, labels), lambda: retrieval_metrics(e[:20], labels[:20], e[20:], labels[20:]),
                 lambda: pair_distances(e, labels)):
        with pytest.raises(ValueError, match="rows hold NaN or inf"):
            call()
    with pytest.raises(ValueError, match="3 of 40 rows hold NaN or inf \\(first: row 3"):
        retrieval_metrics(e, labels)
    with pytest.raises(ValueError, match="labels must have shape \\(40,\\)"):
        pair_distances(np.nan_to_num(e, posinf=0.0), labels[:5])
    grad = torch.from_numpy(np.nan_to_num(e, posinf=0.0)).requires_grad_()
    assert pair_distances(grad, labels).positive.shape == pair_distances(grad.detach().numpy(), labels).positive.shape


def test_a_miner_or_loss_name_typed_wrong_is_named_as_typed_with_the_names_it_may_mean():
    from retrieval.losses import build_loss
    from retrieval.mining import build_miner

    with pytest.raises(ValueError, match="got 'pair-semihard' \\(did you mean pair-hard, semihard\\?\\)"):
        build_miner("pair-semihard", 0.2)  # was "got 'semihard'", the prefix dropped
    with pytest.raises(ValueError, match="got 'batch_hard' \\(did you mean batch-hard"):
        build_miner("batch_hard", 0.2)
    with pytest.raises(ValueError, match="got 'Semihard' \\(did you mean semihard\\?\\)"):
        TripletMiner("Semihard", 0.2)
    with pytest.raises(ValueError, match="got 'info-nce' \\(did you mean infonce\\?\\)"):
        build_loss("info-nce")
    assert build_miner("none", 0.2) is None and isinstance(build_miner("pair-active", 0.2), PairMiner)


def test_a_class_typed_short_is_answered_with_the_names_that_begin_with_it():
    """`mining --class bottle-tea` listed the first five classes alphabetically, not bottle-teal-…"""
    from retrieval.diagnostics import check_class
    from retrieval.errors import RetrievalError, close_names

    classes = ["bottle-blue-letter-k", "bottle-green-letter-a", "bottle-teal-letter-a", "bottle-teal-letter-k", "can-red"]
    with pytest.raises(RetrievalError, match="did you mean bottle-teal-letter-a, bottle-teal-letter-k\\?"):
        check_class("bottle-tea", classes)
    assert close_names(["can-red-diamnd"], ["can-red-diamond", "can-yellow-diamond"]) == ["can-red-diamond", "can-yellow-diamond"]
    assert close_names(["CAN-RED"], classes) == ["can-red"] and close_names(["zzz"], classes) == []
