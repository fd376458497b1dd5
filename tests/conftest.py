"""Shared test set-up: no network (a mistaken pretrained=True fails at once), few threads."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("STREAMLIT_BROWSER_GATHER_USAGE_STATS", "false")

import torch  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))

import pytest  # noqa: E402

from retrieval.sample_data import generate_sample_data  # noqa: E402

# Training settings small enough for a CPU test run: a tiny backbone, 32 px images, P×K = 4×3,
# no worker processes, fp32. Test modules import it (``from conftest import TINY``) and add their own keys.
TINY = dict(backbone="resnet10t", embedding_dim=16, image_size=32, classes_per_batch=4, images_per_class=3,
            num_workers=0, precision="fp32", hardest_per_epoch=10, val_fraction=0.25)


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """Generated sample data (8 training classes, 3 test classes, 6 images each, 32 px), once per module."""
    root = tmp_path_factory.mktemp("sample")
    generate_sample_data(root / "data", n_train_classes=8, n_test_classes=3, images_per_class=6, image_size=32)
    return root / "data"


def brute_is_negative(labels, rules=None):
    """is_neg(a, n) from the rules' definition, by hand."""
    y = [int(v) for v in labels]
    never = set() if rules is None else {frozenset(p) for p in rules.never_negative}
    groups = None if rules is None else rules.class_groups
    mode = "all" if rules is None else rules.negatives

    def allowed(a, n):
        return y[a] != y[n] and frozenset((y[a], y[n])) not in never

    def is_neg(a, n):
        if not allowed(a, n):
            return False
        if mode == "all":
            return True
        same = groups[y[a]] == groups[y[n]]
        if mode == "same-group":
            return same
        has_same = any(allowed(a, m) and groups[y[a]] == groups[y[m]] for m in range(len(y)))
        return same or not has_same

    return is_neg
