"""The gallery's embeddings on a map: a 2-D projection (PCA, or UMAP when ``umap-learn`` is
installed) fitted on the gallery, on which a query can be placed (the app's Embedding map page).
PCA: the centred rows X − μ times the first two right singular vectors of X − μ, each signed so
that its largest loading is positive (the same gallery gives the same map)."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any

import numpy as np

from retrieval.errors import RetrievalError

__all__ = ["Projection", "project_2d", "umap_available"]


def umap_available() -> bool:
    """Whether ``umap-learn`` is installed (the ``[umap]`` extra)."""
    return importlib.util.find_spec("umap") is not None


@dataclass
class Projection:
    """A fitted 2-D projection of some gallery items: ``coords`` (n, 2) for ``items`` (gallery item
    ids), and :meth:`transform` to place new vectors (a query) on the same map."""

    method: str
    items: np.ndarray
    coords: np.ndarray
    explained: tuple[float, float] | None = None  # PCA: fraction of variance per axis
    _mean: np.ndarray | None = None
    _axes: np.ndarray | None = None
    _reducer: Any = None

    def transform(self, vectors: np.ndarray) -> np.ndarray:
        vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        if self.method == "pca":
            return (vectors - self._mean) @ self._axes
        return np.asarray(self._reducer.transform(vectors), dtype=np.float32)


def project_2d(embeddings: np.ndarray, *, method: str = "pca", max_points: int = 5000, seed: int = 0) -> Projection:
    """Fit a 2-D projection of ``embeddings`` (N, D), on at most ``max_points`` rows drawn at
    random (seeded) when N is larger. ``method`` is ``"pca"`` (centred SVD; axes signed so the
    result is deterministic) or ``"umap"`` (needs ``umap-learn``)."""
    n = len(embeddings)
    if n == 0:
        raise RetrievalError("the gallery is empty: nothing to project")
    if method not in ("pca", "umap"):
        raise RetrievalError(f"unknown projection {method!r}: use pca or umap")
    if method == "umap" and not umap_available():
        raise RetrievalError("UMAP needs the umap-learn package: pip install 'retrieval[umap]'")
    items = np.arange(n) if n <= max_points else np.sort(np.random.default_rng(seed).choice(n, max_points, replace=False))
    x = np.asarray(embeddings[items], dtype=np.float32)
    if method == "pca":
        mean = x.mean(axis=0)
        centred = x - mean
        _, singular, vt = np.linalg.svd(centred, full_matrices=False)
        axes = vt[:2].T.copy() if vt.shape[0] >= 2 else np.pad(vt.T, ((0, 0), (0, 2 - vt.shape[0])))
        for j in range(axes.shape[1]):  # sign convention: largest loading positive
            if axes[np.argmax(np.abs(axes[:, j])), j] < 0:
                axes[:, j] = -axes[:, j]
        variance = singular ** 2
        total = float(variance.sum()) or 1.0
        explained = tuple(float(v / total) for v in (list(variance[:2]) + [0.0, 0.0])[:2])
        return Projection("pca", items, (centred @ axes).astype(np.float32), explained, mean, axes)
    import umap  # noqa: PLC0415

    reducer = umap.UMAP(n_components=2, random_state=seed, n_neighbors=min(15, max(2, len(x) - 1)))
    coords = np.asarray(reducer.fit_transform(x), dtype=np.float32)
    return Projection("umap", items, coords, _reducer=reducer)
