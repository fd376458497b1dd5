"""Tests for retrieval.index.store: the float32 ``.npy`` embeddings file written and read by row blocks."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.errors import RetrievalError
from retrieval.index.store import RowWriter, copy_rows, iter_rows, npy_shape, shrink_rows


def rows(n, dim=4, seed=0):
    return np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)


def test_row_writer_blocks_in_any_order_make_a_file_numpy_loads(tmp_path):
    expected = rows(10)
    path = tmp_path / "e.npy"
    with RowWriter(path, 10, 4) as writer:
        writer.write(6, expected[6:])
        writer.write(0, expected[:6])
    np.testing.assert_array_equal(np.load(path), expected)
    assert npy_shape(path) == (10, 4)


def test_row_writer_refuses_rows_of_another_dimension(tmp_path):
    with RowWriter(tmp_path / "e.npy", 3, 4) as writer, pytest.raises(ValueError, match="dimension 4"):
        writer.write(0, rows(3, dim=5))


def test_iter_rows_reads_a_file_and_an_array_in_the_same_blocks(tmp_path):
    expected = rows(11)
    np.save(tmp_path / "e.npy", expected)
    from_file = list(iter_rows(tmp_path / "e.npy", 4))
    from_array = list(iter_rows(expected, 4))
    assert [start for start, _ in from_file] == [start for start, _ in from_array] == [0, 4, 8]
    for (_, a), (_, b) in zip(from_file, from_array):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(np.concatenate([block for _, block in from_file]), expected)


def test_copy_rows_then_shrink_keeps_the_first_rows(tmp_path):
    expected = rows(9)
    np.save(tmp_path / "old.npy", expected)
    progress = []
    with RowWriter(tmp_path / "new.npy", 12, 4) as writer:
        copy_rows(tmp_path / "old.npy", writer, 9, lambda *p: progress.append(p), chunk_rows=5)
    assert progress == [("copy", 5, 9), ("copy", 9, 9)]
    shrink_rows(tmp_path / "new.npy", 7, 4)
    np.testing.assert_array_equal(np.load(tmp_path / "new.npy"), expected[:7])
    assert not (tmp_path / "new.npy.part").exists()


def test_an_array_that_is_not_float32_rows_is_refused(tmp_path):
    np.save(tmp_path / "e.npy", np.zeros((3, 4), np.float64))
    with pytest.raises(RetrievalError, match="float32"):
        npy_shape(tmp_path / "e.npy")
