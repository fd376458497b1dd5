"""The one embedding loop: paths and PIL images, unreadable files, batches in order, progress."""

import numpy as np
import pytest
import torch
from PIL import Image

from retrieval.embed import embed_images, embed_readable, embedding_batches
from retrieval.errors import RetrievalError
from retrieval.model import EmbeddingModel


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return EmbeddingModel("resnet10t", 16).eval()


def _transform(image):
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)


def _images(n, size=32):
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


def test_embed_images_matches_forward_on_pil_images(model):
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)) for _ in range(5)]

    def transform(image):
        return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)

    out = embed_images(model, images, transform, batch_size=2)
    with torch.no_grad():
        expected = model(torch.stack([transform(i) for i in images])).numpy()
    assert out.shape == (5, 16) and out.dtype == np.float32
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_files_and_pil_images_give_the_same_rows(model, tmp_path):
    images = _images(5)
    paths = []
    for i, image in enumerate(images):
        paths.append(tmp_path / f"{i}.png")
        image.save(paths[-1])
    from_files = embed_images(model, paths, _transform, batch_size=2, num_workers=0)
    from_pil = embed_images(model, images, _transform, batch_size=2)
    np.testing.assert_array_equal(from_files, from_pil)


def test_unreadable_file_is_skipped_by_embed_readable_and_named_by_embed_images(model, tmp_path):
    paths = []
    for i, image in enumerate(_images(4)):
        paths.append(tmp_path / f"{i}.png")
        image.save(paths[-1])
    paths[2].write_bytes(b"not an image")
    rows, kept = embed_readable(model, paths, _transform, batch_size=3, num_workers=0)
    assert kept == [0, 1, 3] and rows.shape == (3, 16)
    # other batches, other kernels: equal up to float rounding
    np.testing.assert_allclose(rows, embed_images(model, [paths[i] for i in kept], _transform, batch_size=3, num_workers=0), atol=1e-5)
    with pytest.raises(RetrievalError, match="2.png"):
        embed_images(model, paths, _transform, batch_size=3, num_workers=0)


def test_batches_come_in_image_order_and_progress_ends_at_the_total(model):
    images = _images(7)
    progress = []
    batches = list(embedding_batches(model, images, _transform, batch_size=3, on_progress=lambda d, t: progress.append((d, t))))
    assert [ids for _rows, ids in batches] == [[0, 1, 2], [3, 4, 5], [6]]
    assert progress[-1] == (7, 7) and all(t == 7 for _d, t in progress)
    assert [d for d, _t in progress] == sorted(d for d, _t in progress)


def test_no_images_give_no_rows(model):
    rows, kept = embed_readable(model, [], _transform)
    assert rows.shape == (0, 16) and kept == []
