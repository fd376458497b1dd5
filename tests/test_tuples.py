"""retrieval.tuples: the mined tuples' two forms (index lists, dense masks) say the same thing."""

import pytest
import torch

from retrieval.negatives import positive_mask
from retrieval.tuples import CHUNK_ELEMENTS, MinedPairs, MinedTriplets, anchor_chunks, padded_positives, pairs_to_masks


class _Record:
    n_mined = 0


def test_padded_positives_lists_each_anchors_positives_in_ascending_order():
    labels = torch.tensor([0, 1, 0, 0, 1, 2])
    positives, valid = padded_positives(positive_mask(labels))
    assert positives.shape == (6, 2)
    rows = [positives[a][valid[a]].tolist() for a in range(6)]
    assert rows == [[2, 3], [4], [0, 3], [0, 2], [1], []]


def test_pairs_to_masks_marks_exactly_the_given_pairs():
    pos, neg = pairs_to_masks(3, torch.tensor([0]), torch.tensor([2]), torch.tensor([1, 1]), torch.tensor([0, 2]))
    assert pos.nonzero().tolist() == [[0, 2]]
    assert neg.nonzero().tolist() == [[1, 0], [1, 2]]


def test_dense_triplets_enumerate_to_the_same_triplets_and_pair_masks():
    labels = torch.tensor([0, 0, 1, 1, 0])
    positives, _ = padded_positives(positive_mask(labels))
    mask = torch.zeros(5, positives.shape[1], 5, dtype=torch.bool)
    mask[0, 0, 2] = mask[4, 1, 3] = True  # (0, positives[0, 0], 2) and (4, positives[4, 1], 3)
    dense = MinedTriplets(None, None, None, _Record(), dense=(positives, mask))
    assert list(zip(dense.anchors.tolist(), dense.positives.tolist(), dense.negatives.tolist())) == [(0, 1, 2), (4, 1, 3)]
    explicit = MinedTriplets(dense.anchors, dense.positives, dense.negatives, _Record())
    for got, expected in zip(dense.pair_masks(5), explicit.pair_masks(5)):
        assert torch.equal(got, expected)


def test_pair_masks_of_mined_pairs_agree_in_both_forms():
    labels = torch.tensor([0, 0, 1, 1])
    positives, valid = padded_positives(positive_mask(labels))
    negative_kept = torch.zeros(4, 4, dtype=torch.bool)
    negative_kept[0, 3] = True
    masked = MinedPairs(None, None, None, None, _Record(), masks=(positives, valid, negative_kept))
    explicit = MinedPairs(*masked.as_pairs(), _Record())
    for got, expected in zip(masked.pair_masks(4), explicit.pair_masks(4)):
        assert torch.equal(got, expected)
    assert len(explicit) == 4 + 1


@pytest.mark.parametrize("batch, per_anchor", [(0, 10), (7, 1), (1000, CHUNK_ELEMENTS // 3), (5, 2 * CHUNK_ELEMENTS)])
def test_anchor_chunks_cover_the_batch_once_within_the_element_budget(batch, per_anchor):
    chunks = anchor_chunks(batch, per_anchor)
    assert [i for c in chunks for i in range(c.start, c.stop)] == list(range(batch))
    assert all((c.stop - c.start) * per_anchor <= CHUNK_ELEMENTS or c.stop - c.start == 1 for c in chunks)
