"""Tests for retrieval.evaluate: hand-worked cases, a slow reference loop, and pytorch-metric-learning."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from retrieval.errors import RetrievalError
from retrieval.evaluate import retrieval_metrics


def on_circle(degrees):
    """Unit vectors at these angles: their distance grows with the angle between them, so the
    points behave like points on a line whose ranking we can work out by hand."""
    radians = np.deg2rad(np.asarray(degrees, dtype=np.float64))
    return np.stack([np.cos(radians), np.sin(radians)], axis=1).astype(np.float32)


# Six gallery points: A 0deg, B 10, C 25, D 45, E 60, F 100; classes 0, 0, 1, 0, 1, 1.
LINE = on_circle([0, 10, 25, 45, 60, 100])
LINE_LABELS = [0, 0, 1, 0, 1, 1]


def test_leave_one_out_metrics_match_hand_worked_ranking():
    # Each query ranks the five others by angle gap (x = other class, v = same class):
    #   A(0):   B10 v, C25 x, D45 v, E60 x, F100 x   R=2  AP = (1/2)(1)        = 0.5   hit@1
    #   B(0):   A10 v, C15 x, D35 v, E50 x, F90 x    R=2  AP = 0.5                     hit@1
    #   C(1):   B15 x, D20 x, A25 x, E35 v, F75 v    R=2  AP = 0
    #   D(0):   E15 x, C20 x, B35 v, A45 v, F55 x    R=2  AP = 0
    #   E(1):   D15 x, C35 v, F40 v, B50 x, A60 x    R=2  AP = (1/2)(P(2)=1/2) = 0.25
    #   F(1):   E40 v, D55 x, C75 v, B90 x, A100 x   R=2  AP = (1/2)(1)        = 0.5   hit@1
    # recall@1 = 3/6; every query sees all 5 others in its top 5 -> recall@5 = recall@10 = 1;
    # precision@10 = 2 same-class / 10 for every query = 0.2; MAP@R = 1.75 / 6.
    metrics = retrieval_metrics(LINE, LINE_LABELS)
    assert metrics["recall_at_1"] == pytest.approx(0.5)
    assert metrics["recall_at_5"] == pytest.approx(1.0)
    assert metrics["recall_at_10"] == pytest.approx(1.0)
    assert metrics["precision_at_10"] == pytest.approx(0.2)
    assert metrics["map_at_r"] == pytest.approx(1.75 / 6)
    assert metrics["n_queries"] == 6
    assert metrics["n_skipped_queries"] == 0


def test_cross_set_metrics_match_hand_worked_ranking_and_skip_queries_without_their_class():
    # Queries against the six-point gallery above:
    #   Q1 3deg class 0:  A3 v, B7 v, C22 x, D42 v, E57 x, F97 x     R=3  AP = (1/3)(1 + 1)     = 2/3
    #   Q2 52deg class 1: D7 x, E8 v, C27 v, B42 x, F48 v, A52 x     R=3  AP = (1/3)(1/2 + 2/3) = 7/18
    #   Q3 30deg class 7: no class-7 item in the gallery, R=0: skipped from every metric.
    # recall@1 = 1/2 (Q1); recall@5 = 1; precision@10 = 3/10 each; MAP@R = (2/3 + 7/18) / 2 = 19/36.
    queries = on_circle([3, 52, 30])
    metrics = retrieval_metrics(queries, [0, 1, 7], LINE, LINE_LABELS)
    assert metrics["recall_at_1"] == pytest.approx(0.5)
    assert metrics["recall_at_5"] == pytest.approx(1.0)
    assert metrics["precision_at_10"] == pytest.approx(0.3)
    assert metrics["map_at_r"] == pytest.approx(19 / 36)
    assert metrics["n_queries"] == 2
    assert metrics["n_skipped_queries"] == 1


def test_leave_one_out_never_counts_the_query_as_its_own_neighbour():
    # Same six points as a gallery for themselves (cross-set): each query finds itself at
    # distance 0 first, so recall@1 = 1 and R = 3 includes itself. Leave-one-out must instead
    # give the hand-worked 0.5 above.
    cross = retrieval_metrics(LINE, LINE_LABELS, LINE, LINE_LABELS)
    assert cross["recall_at_1"] == pytest.approx(1.0)
    leave_one_out = retrieval_metrics(LINE, LINE_LABELS)
    assert leave_one_out["recall_at_1"] == pytest.approx(0.5)


def test_leave_one_out_skips_a_class_with_a_single_image():
    # Points 0, 10, 20 deg; the 20-deg point is the only one of class 1, so it has R = 0 and is
    # skipped. The two class-0 points find each other first: every metric is perfect, and
    # precision@10 = 1 same-class / 10.
    metrics = retrieval_metrics(on_circle([0, 10, 20]), [0, 0, 1])
    assert metrics["n_queries"] == 2
    assert metrics["n_skipped_queries"] == 1
    assert metrics["recall_at_1"] == pytest.approx(1.0)
    assert metrics["map_at_r"] == pytest.approx(1.0)
    assert metrics["precision_at_10"] == pytest.approx(0.1)


def test_no_query_with_a_same_class_item_is_a_user_error():
    with pytest.raises(RetrievalError, match="no query"):
        retrieval_metrics(on_circle([0, 10]), [0, 1])


def test_no_query_class_among_the_gallerys_says_so_not_leave_one_out():
    x = np.eye(4, dtype=np.float32)
    with pytest.raises(RetrievalError, match=r"no query class is among the gallery's classes") as error:
        retrieval_metrics(x[:2], [0, 1], x[2:], [2, 3])
    assert "leave-one-out" not in str(error.value)


def test_embeddings_are_normalised_so_scale_does_not_change_the_ranking():
    scaled = LINE * np.array([[3.0], [0.5], [2.0], [7.0], [1.0], [0.1]], dtype=np.float32)
    assert retrieval_metrics(scaled, LINE_LABELS) == retrieval_metrics(LINE, LINE_LABELS)


def test_chunk_size_does_not_change_the_metrics():
    embeddings, labels = clustered(120, 8, 16, seed=3)
    whole = retrieval_metrics(embeddings, labels, chunk_size=1000)
    for chunk_size in (1, 7, 50):
        chunked = retrieval_metrics(embeddings, labels, chunk_size=chunk_size)
        for key, value in whole.items():
            assert chunked[key] == pytest.approx(value, abs=1e-12), key


def test_metrics_accept_torch_tensors():
    as_numpy = retrieval_metrics(LINE, LINE_LABELS)
    as_torch = retrieval_metrics(torch.from_numpy(LINE), torch.tensor(LINE_LABELS))
    assert as_torch == as_numpy


# --- random inputs against references ------------------------------------------------------


def clustered(n, n_classes, dim, seed):
    """Noisy class centres: a mix of easy and confusable neighbours, no exact distance ties."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, dim))
    labels = rng.integers(0, n_classes, size=n)
    embeddings = centres[labels] + 1.2 * rng.normal(size=(n, dim))
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    return embeddings.astype(np.float32), labels


def slow_metrics(queries, query_labels, gallery=None, gallery_labels=None, ks=(1, 5, 10)):
    """The definitions, one query at a time, with Python loops."""
    leave_one_out = gallery is None
    if leave_one_out:
        gallery, gallery_labels = queries, query_labels
    sums = {f"recall_at_{k}": 0.0 for k in ks} | {"precision_at_10": 0.0, "map_at_r": 0.0}
    n_queries = 0
    for q in range(len(queries)):
        candidates = [g for g in range(len(gallery)) if not (leave_one_out and g == q)]
        distance = {g: float(np.linalg.norm(queries[q].astype(np.float64) - gallery[g])) for g in candidates}
        ranking = sorted(candidates, key=lambda g: distance[g])
        relevant = [gallery_labels[g] == query_labels[q] for g in ranking]
        r = sum(relevant)
        if r == 0:
            continue
        n_queries += 1
        for k in ks:
            sums[f"recall_at_{k}"] += float(any(relevant[:k]))
        sums["precision_at_10"] += sum(relevant[:10]) / 10
        ap, found = 0.0, 0
        for i in range(1, r + 1):
            if relevant[i - 1]:
                found += 1
                ap += found / i
        sums["map_at_r"] += ap / r
    return {key: value / n_queries for key, value in sums.items()} | {"n_queries": n_queries}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_leave_one_out_matches_a_slow_loop_on_random_inputs(seed):
    embeddings, labels = clustered(150, 12, 16, seed)
    labels[0] = 99  # one singleton class: must be skipped
    fast = retrieval_metrics(embeddings, labels, chunk_size=37)
    slow = slow_metrics(embeddings, labels)
    assert fast["n_skipped_queries"] == 1
    for key, value in slow.items():
        assert fast[key] == pytest.approx(value, abs=1e-6), key


@pytest.mark.parametrize("seed", [0, 1])
def test_cross_set_matches_a_slow_loop_on_random_inputs(seed):
    embeddings, labels = clustered(200, 10, 12, seed)
    queries, gallery = embeddings[:60], embeddings[60:]
    query_labels, gallery_labels = labels[:60].copy(), labels[60:]
    query_labels[:3] = 77  # classes absent from the gallery: skipped
    fast = retrieval_metrics(queries, query_labels, gallery, gallery_labels, chunk_size=16)
    slow = slow_metrics(queries, query_labels, gallery, gallery_labels)
    assert fast["n_skipped_queries"] == 3
    for key, value in slow.items():
        assert fast[key] == pytest.approx(value, abs=1e-6), key


def pml_accuracy(query, query_labels, reference=None, reference_labels=None):
    from pytorch_metric_learning.distances import LpDistance
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    from pytorch_metric_learning.utils.inference import CustomKNN

    calculator = AccuracyCalculator(
        include=("precision_at_1", "mean_average_precision_at_r"),
        k="max_bin_count",
        device=torch.device("cpu"),
        knn_func=CustomKNN(LpDistance(normalize_embeddings=True)),
    )
    if reference is None:
        return calculator.get_accuracy(torch.from_numpy(query), torch.from_numpy(query_labels))
    return calculator.get_accuracy(
        torch.from_numpy(query), torch.from_numpy(query_labels),
        torch.from_numpy(reference), torch.from_numpy(reference_labels),
        ref_includes_query=False,
    )


@pytest.mark.parametrize("seed", [0, 1])
def test_leave_one_out_agrees_with_pytorch_metric_learning(seed):
    embeddings, labels = clustered(300, 15, 32, seed)
    ours = retrieval_metrics(embeddings, labels)
    theirs = pml_accuracy(embeddings, labels)
    assert ours["recall_at_1"] == pytest.approx(theirs["precision_at_1"], abs=1e-6)
    assert ours["map_at_r"] == pytest.approx(theirs["mean_average_precision_at_r"], abs=1e-6)


def test_cross_set_agrees_with_pytorch_metric_learning():
    embeddings, labels = clustered(300, 15, 32, seed=5)
    ours = retrieval_metrics(embeddings[:100], labels[:100], embeddings[100:], labels[100:])
    theirs = pml_accuracy(embeddings[:100], labels[:100], embeddings[100:], labels[100:])
    assert ours["recall_at_1"] == pytest.approx(theirs["precision_at_1"], abs=1e-6)
    assert ours["map_at_r"] == pytest.approx(theirs["mean_average_precision_at_r"], abs=1e-6)
    assert not math.isnan(ours["map_at_r"])


# --- evaluate_run: a run directory and image folders --------------------------------------


def test_evaluate_run_matches_classes_by_folder_name_across_query_and_gallery(tmp_path):
    from PIL import Image

    from retrieval.evaluate import evaluate_run
    from retrieval.model import EmbeddingModel
    from retrieval.run import save_model

    torch.manual_seed(0)
    model = EmbeddingModel("resnet10t", 8).eval()
    save_model(tmp_path / "run", model, {"image_size": 32, "data_config": model.data_config(32)})
    rng = np.random.default_rng(0)
    for name in ("a", "b", "c"):
        (tmp_path / "gallery" / name).mkdir(parents=True)
        for i in range(3):
            pixels = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "gallery" / name / f"{i}.png")
    # The query folder holds copies of classes b and c only: its class 0 is "b", the gallery's
    # is "a". Matched by name, every query finds its own copy first: recall@1 = 1.
    for name in ("b", "c"):
        (tmp_path / "query" / name).mkdir(parents=True)
        for i in range(3):
            (tmp_path / "query" / name / f"{i}.png").write_bytes((tmp_path / "gallery" / name / f"{i}.png").read_bytes())
    options = {"device": "cpu", "num_workers": 0, "batch_size": 4}
    cross = evaluate_run(tmp_path / "run", query_dir=tmp_path / "query", gallery_dir=tmp_path / "gallery", **options)
    assert cross["n_queries"] == 6 and cross["recall_at_1"] == pytest.approx(1.0)
    leave_one_out = evaluate_run(tmp_path / "run", tmp_path / "gallery", **options)
    assert leave_one_out["n_queries"] == 9
    assert set(leave_one_out) >= {"recall_at_1", "recall_at_5", "recall_at_10", "precision_at_10", "map_at_r"}
    with pytest.raises(RetrievalError, match="--gallery"):
        evaluate_run(tmp_path / "run", query_dir=tmp_path / "query", **options)


def test_a_class_folder_named_in_decomposed_unicode_matches_its_composed_twin(tmp_path):
    """macOS writes "Café" decomposed (NFD: e + combining accent), Linux and Windows composed (NFC):
    the names print alike, and the query and gallery folders of one product did not match."""
    import unicodedata

    from PIL import Image

    from retrieval.evaluate import evaluate_run
    from retrieval.model import EmbeddingModel
    from retrieval.run import save_model

    torch.manual_seed(0)
    model = EmbeddingModel("resnet10t", 8).eval()
    save_model(tmp_path / "run", model, {"image_size": 32, "data_config": model.data_config(32)})
    rng = np.random.default_rng(0)
    for name in ("Café crème", "Thé"):
        composed, decomposed = unicodedata.normalize("NFC", name), unicodedata.normalize("NFD", name)
        assert composed != decomposed
        (tmp_path / "gallery" / composed).mkdir(parents=True)
        (tmp_path / "query" / decomposed).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)).save(tmp_path / "gallery" / composed / f"{i}.png")
            (tmp_path / "query" / decomposed / f"{i}.png").write_bytes((tmp_path / "gallery" / composed / f"{i}.png").read_bytes())
    cross = evaluate_run(tmp_path / "run", query_dir=tmp_path / "query", gallery_dir=tmp_path / "gallery",
                         device="cpu", num_workers=0, batch_size=4)
    assert cross["n_queries"] == 4 and cross["recall_at_1"] == pytest.approx(1.0)


def test_class_names_as_labels_give_the_metrics_of_their_integer_ids():
    """A gallery index's labels are class names: retrieval_metrics numbers them itself, in one numbering for
    query and gallery (leave-one-out and cross-set), with the same metrics as integer ids."""
    rng = np.random.default_rng(3)
    embeddings = rng.normal(size=(30, 8))
    names = np.array(["pear", "apple", "kiwi"])[rng.integers(0, 3, 30)]
    ids = np.searchsorted(np.array(["apple", "kiwi", "pear"]), names)
    assert retrieval_metrics(embeddings, list(names)) == retrieval_metrics(embeddings, ids)
    gallery = rng.normal(size=(12, 8))
    gallery_names = np.array(["kiwi", "pear", "plum"])[rng.integers(0, 3, 12)]
    gallery_ids = np.searchsorted(np.array(["apple", "kiwi", "pear", "plum"]), gallery_names)
    query_ids = np.searchsorted(np.array(["apple", "kiwi", "pear", "plum"]), names)
    assert retrieval_metrics(embeddings, names, gallery, gallery_names) == retrieval_metrics(embeddings, query_ids, gallery, gallery_ids)


def test_read_only_embeddings_such_as_an_indexs_memory_map_give_no_warning(tmp_path):
    import warnings

    path = tmp_path / "embeddings.npy"
    np.save(path, np.random.default_rng(0).normal(size=(12, 4)).astype(np.float32))
    mapped = np.load(path, mmap_mode="r")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        metrics = retrieval_metrics(mapped, [0, 1, 2] * 4)
    assert metrics == retrieval_metrics(np.array(mapped), [0, 1, 2] * 4)
