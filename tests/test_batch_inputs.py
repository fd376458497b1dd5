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
    for labels in (["a", "a", "b", "b", "c", "c"], np.array(["x", "x", "y", "y", "z", "z"]), ids.float(), ids.tolist()):
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
