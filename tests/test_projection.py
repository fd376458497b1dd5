"""retrieval.projection: the gallery's 2-D map (PCA, or UMAP when installed), and a query placed on it."""

import numpy as np
import pytest

from retrieval import projection
from retrieval.errors import RetrievalError


def test_project_2d_pca_places_a_gallery_row_where_it_was_fitted():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 16)).astype(np.float32) * np.linspace(3, 0.1, 16, dtype=np.float32)
    fitted = projection.project_2d(x)
    assert fitted.coords.shape == (200, 2) and list(fitted.items) == list(range(200))
    np.testing.assert_allclose(fitted.transform(x[7])[0], fitted.coords[7], atol=1e-4)
    assert fitted.explained[0] >= fitted.explained[1] > 0
    # the first axis carries the largest variance: close to the data's first coordinate
    assert abs(np.corrcoef(fitted.coords[:, 0], x[:, 0])[0, 1]) > 0.9
    again = projection.project_2d(x)
    np.testing.assert_array_equal(again.coords, fitted.coords)


def test_project_2d_samples_large_galleries_and_rejects_unknown_methods():
    x = np.random.default_rng(1).normal(size=(300, 4)).astype(np.float32)
    fitted = projection.project_2d(x, max_points=50)
    assert len(fitted.items) == 50 and len(set(fitted.items.tolist())) == 50
    assert list(fitted.items) == sorted(fitted.items)
    with pytest.raises(RetrievalError):
        projection.project_2d(x, method="tsne")
    with pytest.raises(RetrievalError):
        projection.project_2d(x[:0])


def test_project_2d_umap_without_the_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(projection, "umap_available", lambda: False)
    with pytest.raises(RetrievalError, match="umap-learn"):
        projection.project_2d(np.zeros((5, 3)), method="umap")


def test_project_2d_uses_umap_when_installed_and_places_queries_with_it(monkeypatch):
    import sys
    import types

    class FakeUMAP:
        def __init__(self, n_components, random_state, n_neighbors):
            assert n_components == 2 and n_neighbors <= 15

        def fit_transform(self, x):
            return x[:, :2] * 2

        def transform(self, x):
            return x[:, :2] * 2

    monkeypatch.setitem(sys.modules, "umap", types.SimpleNamespace(UMAP=FakeUMAP))
    monkeypatch.setattr(projection, "umap_available", lambda: True)
    x = np.arange(30, dtype=np.float32).reshape(10, 3)
    fitted = projection.project_2d(x, method="umap")
    assert fitted.method == "umap" and fitted.explained is None
    np.testing.assert_array_equal(fitted.coords, x[:, :2] * 2)
    np.testing.assert_array_equal(fitted.transform(x[4]), x[4:5, :2] * 2)
