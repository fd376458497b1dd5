"""The embeddings store: ``index/embeddings.npy``, a float32 (N, D) ``.npy`` file, row i = item i.

The index build streams rows into it with plain file writes (:class:`RowWriter`), the Annoy build and
``--add`` read it back in chunks with plain reads (:func:`iter_rows`, :func:`copy_rows`), and
:func:`shrink_rows` drops the rows reserved for images that turned out unreadable. None of these
holds the whole array in memory, so memory does not grow with the gallery; searching opens the
file as a read-only memory map (``np.load(..., mmap_mode="r")``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from retrieval.errors import RetrievalError

__all__ = ["ProgressCallback", "RowWriter", "copy_rows", "iter_rows", "npy_shape", "read_npy_header", "shrink_rows"]

# Progress callback: (stage, done, total); stages "detect" (a face run: photos searched for faces), "embed", "copy", "add", "build".
ProgressCallback = Callable[[str, int, int], None]


class RowWriter:
    """Writes a float32 (N, D) ``.npy`` file block by block with plain file writes: the rows go
    to disk as they come and, unlike a writable memory map, never accumulate in this process's
    resident memory."""

    def __init__(self, path: Path, n_rows: int, dim: int) -> None:
        header = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n_rows, dim))
        del header  # the file now has its header and its (sparse) full size
        self.dim = dim
        self._file = open(path, "r+b")
        read_npy_header(self._file)
        self._data_offset = self._file.tell()

    def write(self, first_row: int, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, dtype=np.float32)
        if rows.ndim != 2 or rows.shape[1] != self.dim:
            raise ValueError(f"rows of shape {rows.shape} do not fit dimension {self.dim}")
        self._file.seek(self._data_offset + first_row * self.dim * 4)
        self._file.write(rows.tobytes())

    def close(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()

    def __enter__(self) -> "RowWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_npy_header(handle) -> tuple[tuple[int, ...], np.dtype]:
    """Read an .npy header, leaving ``handle`` at the first data byte; (shape, dtype)."""
    version = np.lib.format.read_magic(handle)
    if version == (1, 0):
        shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(handle)
    else:
        shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(handle)
    if fortran_order:
        raise RetrievalError(f"{handle.name}: Fortran-ordered arrays are not supported")
    return shape, dtype


def npy_shape(path: str | Path) -> tuple[int, int]:
    """(N, D) of a float32 ``.npy`` file, from its header; RetrievalError for any other array."""
    with open(path, "rb") as handle:
        shape, dtype = read_npy_header(handle)
    if dtype != np.float32 or len(shape) != 2:
        raise RetrievalError(f"{path}: expected a float32 (N, D) array, found {dtype} {shape}")
    return shape


def iter_rows(source: np.ndarray | str | Path, chunk_rows: int,
              n_rows: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, float32 rows) blocks of an array or of a ``.npy`` file read with plain reads."""
    if not isinstance(source, (str, Path)):
        n = len(source) if n_rows is None else n_rows
        for start in range(0, n, chunk_rows):
            yield start, np.asarray(source[start : min(n, start + chunk_rows)], dtype=np.float32)
        return
    shape = npy_shape(source)
    n = shape[0] if n_rows is None else n_rows
    with open(source, "rb") as handle:
        read_npy_header(handle)
        for start in range(0, n, chunk_rows):
            count = min(chunk_rows, n - start)
            rows = np.fromfile(handle, dtype=np.float32, count=count * shape[1])
            yield start, rows.reshape(count, shape[1])


def copy_rows(source: Path, writer: RowWriter, n_rows: int, on_progress: ProgressCallback | None,
              chunk_rows: int = 65_536) -> None:
    """Copy the first ``n_rows`` rows of the ``.npy`` file ``source`` to the same rows of ``writer``."""
    for start, rows in iter_rows(source, chunk_rows, n_rows):
        writer.write(start, rows)
        if on_progress is not None:
            on_progress("copy", start + len(rows), n_rows)


def shrink_rows(path: Path, n_rows: int, dim: int) -> None:
    """Keep the first ``n_rows`` rows of an .npy file (after unreadable images were left out)."""
    smaller = path.with_name(path.name + ".part")
    with RowWriter(smaller, n_rows, dim) as writer:
        copy_rows(path, writer, n_rows, None)
    os.replace(smaller, path)
