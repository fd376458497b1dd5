"""Pairwise distances and similarities between L2-normalised embeddings.

Every embedding is first scaled to unit length, so for two embeddings x, y with cosine similarity
s(x, y) = x·y the Euclidean distance is d(x, y) = ||x − y|| = sqrt(2 − 2 s(x, y)), between 0 and 2.
That is the distance the losses, the miners, the margin and the Annoy ``angular`` index all use,
so a distance shown in the app is in the same units as the training margin.

The matrices come from one matrix product (``x @ y.T``) computed in float32 or float64, never in
bfloat16 / float16: half-precision inputs are upcast and autocast is switched off inside, because
2 − 2s loses every significant digit near d = 0 in half precision. Large inputs are computed in
row chunks, so a big query × gallery matrix is built piece by piece instead of failing on the
temporaries. The square root has a finite gradient everywhere: where two embeddings coincide
(d² below the rounding noise of 2 − 2s) the distance is exactly 0 and its gradient is 0, not NaN.
Normalisation and the square root are small autograd functions with hand-written backward
passes: for batch-sized matrices the number of operations, not their size, is most of the cost.
"""

from __future__ import annotations

import contextlib

import torch

__all__ = [
    "normalize",
    "cosine_similarity",
    "squared_euclidean_distance",
    "euclidean_distance",
    "euclidean_from_squared",
]

# Matrix elements computed at once when no chunk_size is given (16 Mi, 64 MiB in float32).
CHUNK_ELEMENTS = 1 << 24


def normalize(embeddings: torch.Tensor) -> torch.Tensor:
    """Scale each row to unit L2 norm: x / max(||x||, 1e-12), in float32 (float64 stays float64).

    bfloat16 and float16 inputs are upcast first; a zero row stays zero (its gradient is finite).
    """
    if embeddings.dim() != 2:
        raise ValueError(f"embeddings must be a (batch, dim) matrix, got shape {tuple(embeddings.shape)}")
    with full_precision(embeddings):
        return _Normalize.apply(to_float(embeddings))


def cosine_similarity(
    x: torch.Tensor, y: torch.Tensor | None = None, *, normalized: bool = False, chunk_size: int | None = None
) -> torch.Tensor:
    """s(x_i, y_j) = x_i · y_j / (||x_i|| ||y_j||): the (n, m) cosine-similarity matrix, in [−1, 1].

    ``y=None`` compares x with itself. ``normalized=True`` skips the normalisation when the rows
    are already unit vectors. Rows are processed ``chunk_size`` at a time (default: as many as
    keep one chunk under 16 Mi elements).
    """
    return _pairwise(x, y, normalized, chunk_size, _similarity_block)


def squared_euclidean_distance(
    x: torch.Tensor, y: torch.Tensor | None = None, *, normalized: bool = False, chunk_size: int | None = None
) -> torch.Tensor:
    """d²(x_i, y_j) = ||x̂_i − ŷ_j||² = 2 − 2 s(x_i, y_j) on the normalised rows, clamped to [0, 4]."""
    return _pairwise(x, y, normalized, chunk_size, _squared_block)


def euclidean_distance(
    x: torch.Tensor, y: torch.Tensor | None = None, *, normalized: bool = False, chunk_size: int | None = None
) -> torch.Tensor:
    """d(x_i, y_j) = ||x̂_i − ŷ_j|| = sqrt(2 − 2 s(x_i, y_j)) on the normalised rows, in [0, 2].

    Equals Annoy's ``angular`` distance. The gradient is finite where two embeddings coincide
    (see :func:`euclidean_from_squared`).
    """
    return _pairwise(x, y, normalized, chunk_size, _euclidean_block)


def euclidean_from_squared(squared: torch.Tensor) -> torch.Tensor:
    """d = sqrt(d²) with a finite gradient: where d² is below 16 machine epsilons (the rounding
    noise of 2 − 2s, so the two embeddings coincide as far as the dtype can tell: d < 1.4e-3 in
    float32, < 6e-8 in float64) d is 0 with gradient 0; elsewhere the gradient 1 / (2d) is at
    most 1 / (8 sqrt(eps))."""
    return _SafeSqrt.apply(squared)


# ---------------------------------------------------------------------------------------------
# helpers


def to_float(x: torch.Tensor) -> torch.Tensor:
    """float32 for half-precision and integer tensors; float32 / float64 unchanged."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def full_precision(x: torch.Tensor):
    """A context that switches autocast off on x's device (when it is on), so products stay in float32."""
    try:
        if torch.is_autocast_enabled(x.device.type):
            return torch.autocast(device_type=x.device.type, enabled=False)
    except RuntimeError:  # a device type autocast does not know
        pass
    return contextlib.nullcontext()


class _Normalize(torch.autograd.Function):
    """x / max(||x||, 1e-12) row-wise, as F.normalize, with a hand-written backward: fewer
    operations per call, which is most of the cost for the small matrices of a batch."""

    @staticmethod
    def forward(ctx, x):
        norm = torch.linalg.vector_norm(x, dim=1, keepdim=True)
        inverse = norm.clamp_min(1e-12).reciprocal_()
        y = x * inverse
        ctx.save_for_backward(y, inverse, norm)
        return y

    @staticmethod
    def backward(ctx, grad):
        y, inverse, norm = ctx.saved_tensors
        # d y / d x = (I − y yᵀ) / ||x|| where ||x|| >= 1e-12; I / 1e-12 where the norm was clamped
        along = (grad * y).sum(dim=1, keepdim=True).masked_fill_(norm < 1e-12, 0.0)
        return (grad - y * along) * inverse


class _SafeSqrt(torch.autograd.Function):
    """sqrt(d²), 0 (with gradient 0) where d² <= 16 eps; gradient 1 / (2d) elsewhere."""

    @staticmethod
    def forward(ctx, squared):
        eps = 16 * torch.finfo(squared.dtype).eps
        d = squared.clamp_min(eps).sqrt_().masked_fill_(squared <= eps, 0.0)
        ctx.save_for_backward(d)
        return d

    @staticmethod
    def backward(ctx, grad):
        (d,) = ctx.saved_tensors
        half_inverse = d.reciprocal().mul_(0.5).masked_fill_(d == 0, 0.0)
        return grad * half_inverse


def squared_from_unit_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """d² = 2 − 2 a bᵀ for unit rows, clamped to [0, 4], in one fused matrix product."""
    return torch.addmm(a.new_tensor(2.0), a, b.T, alpha=-2.0).clamp(0.0, 4.0)


def _similarity_block(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a @ b.T


def _squared_block(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return squared_from_unit_rows(a, b)


def _euclidean_block(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return euclidean_from_squared(_squared_block(a, b))


def _pairwise(x, y, normalized, chunk_size, block) -> torch.Tensor:
    with full_precision(x):
        x = to_float(x) if normalized else normalize(x)
        if y is None:
            y = x
        else:
            y = to_float(y) if normalized else normalize(y)
            if y.dtype != x.dtype:
                y = y.to(x.dtype)
        if chunk_size is None:
            chunk_size = max(1, CHUNK_ELEMENTS // max(1, len(y)))
        if len(x) <= chunk_size:
            return block(x, y)
        if torch.is_grad_enabled() and (x.requires_grad or y.requires_grad):
            return torch.cat([block(x[i : i + chunk_size], y) for i in range(0, len(x), chunk_size)])
        out = torch.empty(len(x), len(y), dtype=x.dtype, device=x.device)
        for i in range(0, len(x), chunk_size):
            out[i : i + chunk_size] = block(x[i : i + chunk_size], y)
        return out
