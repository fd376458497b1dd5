"""retrieval.distances: values against the definitions, finite gradients, chunking, precision."""

import math

import pytest
import torch

from retrieval import distances
from retrieval.distances import cosine_similarity, euclidean_distance, normalize, squared_euclidean_distance


def _random(n, dim=16, seed=0, dtype=torch.float64):
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def test_euclidean_distance_is_norm_of_difference_of_unit_vectors():
    x, y = _random(7), _random(5, seed=1)
    d = euclidean_distance(x, y)
    for i in range(7):
        for j in range(5):
            xi = x[i] / x[i].norm()
            yj = y[j] / y[j].norm()
            assert d[i, j].item() == pytest.approx((xi - yj).norm().item(), abs=1e-12)


def test_squared_distance_is_two_minus_two_cosine_and_cosine_is_dot_of_unit_vectors():
    x = _random(9)
    s = cosine_similarity(x)
    expected = torch.nn.functional.cosine_similarity(x[:, None], x[None, :], dim=2)
    torch.testing.assert_close(s, expected, atol=1e-12, rtol=0)
    torch.testing.assert_close(squared_euclidean_distance(x), (2 - 2 * expected).clamp_min(0), atol=1e-12, rtol=0)
    torch.testing.assert_close(euclidean_distance(x) ** 2, squared_euclidean_distance(x), atol=1e-12, rtol=0)


def test_distances_lie_between_zero_and_two_with_zero_diagonal():
    x = _random(50, dtype=torch.float32)
    d = euclidean_distance(x)
    assert float(d.min()) >= 0 and float(d.max()) <= 2
    assert float(d.diagonal().abs().max()) < 1e-3


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_euclidean_gradient_is_finite_where_embeddings_coincide(dtype):
    x = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [2.0, 4.0, 6.0], [0.0, 1.0, 0.0]], dtype=dtype, requires_grad=True)
    d = euclidean_distance(x)
    assert float(d[0, 1].detach()) == 0.0 and float(d[0, 2].detach()) == 0.0
    d.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_zero_embedding_gives_finite_distance_and_gradient():
    x = torch.zeros(3, 4, requires_grad=True)
    d = euclidean_distance(x)
    assert torch.isfinite(d).all()
    d.sum().backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("fn", [cosine_similarity, squared_euclidean_distance, euclidean_distance])
def test_large_input_is_computed_in_chunks_with_the_same_result(fn, monkeypatch):
    x, y = _random(103, dtype=torch.float32), _random(37, seed=3, dtype=torch.float32)
    whole = fn(x, y)
    torch.testing.assert_close(fn(x, y, chunk_size=10), whole)
    monkeypatch.setattr(distances, "CHUNK_ELEMENTS", 37 * 8)  # the automatic chunking: 8 rows at a time
    torch.testing.assert_close(fn(x, y), whole)
    xg = x.clone().requires_grad_(True)
    fn(xg, y, chunk_size=10).sum().backward()  # chunks keep the gradient
    xw = x.clone().requires_grad_(True)
    fn(xw, y).sum().backward()
    torch.testing.assert_close(xg.grad, xw.grad)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_inputs_are_computed_in_float32(dtype):
    x = _random(20, dtype=torch.float32).to(dtype)
    d = euclidean_distance(x)
    assert d.dtype == torch.float32
    torch.testing.assert_close(d, euclidean_distance(x.float()))
    assert normalize(x).dtype == torch.float32


def test_bf16_autocast_does_not_lower_the_distance_precision():
    x = _random(30, dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        d = euclidean_distance(x)
    assert d.dtype == torch.float32
    torch.testing.assert_close(d, euclidean_distance(x))


def test_annoy_angular_distance_is_the_euclidean_distance():
    x = _random(2)
    cos = float(cosine_similarity(x)[0, 1])
    assert float(euclidean_distance(x)[0, 1]) == pytest.approx(math.sqrt(2 - 2 * cos), abs=1e-12)


def test_rejects_non_matrix_input():
    with pytest.raises(ValueError, match="matrix"):
        euclidean_distance(torch.randn(3))
