"""retrieval.diagnostics: margin facts of a search, mining-log summaries, 2-D projection."""

import numpy as np
import pytest

from retrieval import diagnostics
from retrieval.index import Neighbour, exact_search


class BruteForceIndex:
    """The part of GalleryIndex that explain_search uses, by exact search over given vectors."""

    def __init__(self, embeddings, labels):
        self.embeddings = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
        self.labels = labels

    def path(self, item):
        return f"/g/{self.labels[item]}/{item}.png"

    def embed(self, image):
        raise AssertionError("the tests pass embeddings")

    def search(self, vector, k):
        ids, distances = exact_search(self.embeddings, vector, k)
        return [Neighbour(self.path(i), self.labels[i], float(d), 1 - float(d) ** 2 / 2, int(i)) for i, d in zip(ids, distances)]


def unit(*values):
    v = np.asarray(values, dtype=np.float32)
    return v / np.linalg.norm(v)


@pytest.fixture
def index():
    vectors = np.array([
        [1.0, 0.0, 0.0],    # 0 a  (the query's twin)
        [0.9, 0.1, 0.0],    # 1 a
        [0.8, 0.3, 0.0],    # 2 b  nearest negative
        [0.0, 1.0, 0.0],    # 3 b
        [0.0, 0.0, 1.0],    # 4 a  far positive
        [-1.0, 0.0, 0.0],   # 5 c
    ], dtype=np.float32)
    return BruteForceIndex(vectors, ["a", "a", "b", "b", "a", "c"])


def test_explain_search_band_starts_at_the_nearest_distance_and_counts_neighbours_inside(index):
    explanation = diagnostics.explain_search(index, unit(1, 0, 0), 4, margin=0.3)
    distances = [n.distance for n in explanation.neighbours]
    assert [n.item for n in explanation.neighbours] == [0, 1, 2, 3]
    assert explanation.band == (pytest.approx(distances[0]), pytest.approx(distances[0] + 0.3))
    assert explanation.within_margin == sum(d <= distances[0] + 0.3 for d in distances)
    assert explanation.report is None
    assert set(explanation.seconds) == {"embed", "search", "margin"}


def test_explain_search_leaves_out_the_query_item_and_still_returns_k(index):
    explanation = diagnostics.explain_search(index, index.embeddings[0], 3, margin=0.2, exclude_item=0,
                                             query_label="a")
    assert [n.item for n in explanation.neighbours] == [1, 2, 3]
    report = explanation.report
    assert report.positive.item == 1 and report.negative.item == 2
    assert report.gap == pytest.approx(report.negative.distance - report.positive.distance)
    assert report.violation == pytest.approx(0.2 - report.gap)
    assert report.clears_margin is (report.gap >= 0.2)


def test_margin_report_finds_positive_and_negative_beyond_the_top_k(index):
    # query near item 5 (class c): its only positive is itself when excluded -> none; negative exists
    explanation = diagnostics.explain_search(index, index.embeddings[5], 1, margin=0.2, exclude_item=5, query_label="c")
    assert explanation.report.positive is None
    assert explanation.report.negative is not None
    assert explanation.report.gap is None and explanation.report.clears_margin is None
    # query near item 4 (class a) labelled b: the nearest b is outside the top 1
    report = diagnostics.explain_search(index, unit(0, 0.3, 1), 1, margin=0.2, query_label="b").report
    assert report.positive.item == 3 and report.negative.item == 4


def test_margin_report_says_whether_the_gap_clears_the_margin():
    hit = lambda d: diagnostics.GalleryHit(0, "p", "x", d)  # noqa: E731
    assert diagnostics.MarginReport("a", 0.2, hit(0.3), hit(0.6)).clears_margin is True
    inside = diagnostics.MarginReport("a", 0.2, hit(0.3), hit(0.4))
    assert inside.clears_margin is False and inside.violation == pytest.approx(0.1)
    assert diagnostics.MarginReport("a", 0.2, hit(0.5), hit(0.4)).gap == pytest.approx(-0.1)


def test_nearest_by_label_matches_brute_force_in_chunks():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    labels = [str(i % 7) if i % 11 else None for i in range(500)]
    q = x[3]
    (pos, d_pos), (neg, d_neg) = diagnostics.nearest_by_label(x, labels, q, "3", exclude_item=3, chunk_rows=64)
    d = np.sqrt(np.maximum(0, 2 - 2 * x @ q))
    same = [i for i in range(500) if labels[i] == "3" and i != 3]
    other = [i for i in range(500) if labels[i] not in ("3", None)]
    assert pos == min(same, key=lambda i: d[i]) and d_pos == pytest.approx(d[pos], abs=1e-5)
    assert neg == min(other, key=lambda i: d[i]) and d_neg == pytest.approx(d[neg], abs=1e-5)


def log_row(epoch, anchor, negative, gap):
    return {"epoch": epoch, "anchor_path": f"{anchor}.png", "anchor_label": anchor[0], "positive_path": "p.png",
            "positive_label": anchor[0], "negative_path": f"{negative}.png", "negative_label": negative[0],
            "d_ap": 0.5, "d_an": 0.5 + gap, "d_an_minus_d_ap": gap}


def test_pair_history_marks_image_pairs_and_unordered_class_pairs_across_epochs():
    logs = {1: [log_row(1, "a1", "b1", -0.1), log_row(1, "c1", "a2", 0.0)],
            2: [log_row(2, "a1", "b1", 0.05), log_row(2, "a3", "c2", 0.1)]}
    images = diagnostics.pair_history(logs, by="image")
    assert images[("a1.png", "b1.png")] == [1, 2]
    assert images[("c1.png", "a2.png")] == [1]
    classes = diagnostics.pair_history(logs, by="class")
    assert classes[("a", "b")] == [1, 2]
    assert classes[("a", "c")] == [1, 2]  # c->a in epoch 1 and a->c in epoch 2 are one confusion
    with pytest.raises(ValueError):
        diagnostics.pair_history(logs, by="label")


def test_hardness_by_epoch_averages_gaps_and_joins_the_active_fraction():
    logs = {1: [log_row(1, "a1", "b1", -0.1), log_row(1, "c1", "a2", 0.3)], 2: [log_row(2, "a1", "b1", 0.1)]}
    metrics = [{"epoch": 0, "active_fraction": None}, {"epoch": 1, "active_fraction": 0.7},
               {"epoch": 2, "active_fraction": 0.5}, {"epoch": 3, "active_fraction": 0.4, "violating_fraction": 0.2}]
    rows = diagnostics.hardness_by_epoch(logs, metrics, margin=0.2)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert rows[0]["mean_gap"] == pytest.approx(0.1) and rows[0]["n_violating"] == 1 and rows[0]["n_logged"] == 2
    assert rows[1]["active_fraction"] == 0.5 and rows[1]["violating_fraction"] is None
    assert rows[2] == {"epoch": 3, "mean_gap": None, "n_logged": 0, "n_violating": None, "n_nearer": None, "n_mined": None,
                       "active_fraction": 0.4, "violating_fraction": 0.2, "inverted_anchor_fraction": None,
                       "violating_anchor_fraction": None}
    assert rows[0]["n_nearer"] == 1 and rows[0]["n_mined"] is None  # a log without `mined` did not record it


def test_distance_summary_threshold_is_median_positive_plus_margin():
    summary = diagnostics.distance_summary({"positive": [0.2, 0.4, 0.6], "negative": [0.5, 0.7, 1.0, 1.2]}, 0.2)
    assert summary["median_positive"] == pytest.approx(0.4)
    assert summary["threshold"] == pytest.approx(0.6)
    assert summary["negatives_inside"] == pytest.approx(0.25)
    empty = diagnostics.distance_summary({"positive": [], "negative": [1.0]}, 0.2)
    assert empty["threshold"] is None and empty["negatives_inside"] is None
