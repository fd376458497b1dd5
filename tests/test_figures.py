"""retrieval.figures: each chart is an Altair chart with the expected data, and a valid Vega-Lite spec."""

import json

import altair as alt
import numpy as np
import pytest

from retrieval import figures
from retrieval.index import Neighbour


def rows(chart) -> list[dict]:
    return list(chart.data.values)


def neighbours(distances, labels):
    return [Neighbour(path=f"/gallery/{label}/img_{i}.png", label=label, distance=d,
                      similarity=1 - d * d / 2, item=i)
            for i, (d, label) in enumerate(zip(distances, labels))]


def valid(chart) -> dict:
    spec = chart.to_dict()  # validates against the Vega-Lite schema
    json.dumps(spec)
    return spec


def test_margin_chart_has_one_bar_per_neighbour_and_band_from_nearest_to_nearest_plus_margin():
    found = neighbours([0.31, 0.35, 0.52, 0.60], ["a", "a", "b", "c"])
    chart = figures.margin_chart(found, 0.2, query_label="a")
    assert isinstance(chart, alt.LayerChart)
    band, bars, rule, halo, text = chart.layer
    assert rows(halo) == rows(text) == [{"high": pytest.approx(0.51), "text": "within ε = 0.2 of the best match"}]
    assert halo.mark.stroke == "white" and text.mark.color != "white"  # the halo under the letters
    assert [r["rank"] for r in rows(bars)] == [1, 2, 3, 4]
    assert [r["distance"] for r in rows(bars)] == [0.31, 0.35, 0.52, 0.60]
    assert [r["relation"] for r in rows(bars)] == ["positive", "positive", "negative", "negative"]
    assert rows(bars)[0]["name"] == "img_0.png"
    assert rows(band) == [{"low": 0.31, "high": pytest.approx(0.51), "margin": 0.2}]
    assert rows(rule)[0]["nearest"] == 0.31
    assert bars.encoding.color.shorthand == "label:N"
    valid(chart)


def test_margin_chart_y_axis_shows_the_whole_band():
    chart = figures.margin_chart(neighbours([0.1, 0.12], ["a", "b"]), 0.5)
    domain = valid(chart)["layer"][1]["encoding"]["y"]["scale"]["domain"]
    assert domain[0] == 0 and domain[1] >= 0.6


def test_margin_chart_unlabelled_gallery_and_no_neighbours():
    chart = figures.margin_chart(neighbours([0.2], [None]), 0.1)
    assert rows(chart.layer[1])[0]["label"] == "(unlabelled)"
    assert rows(chart.layer[1])[0]["relation"] == ""
    empty = figures.margin_chart([], 0.1)
    assert rows(empty.layer[1]) == []
    valid(empty)


def test_embedding_map_has_a_point_per_item_and_the_query_on_top():
    coords = np.array([[0.0, 1.0], [1.0, 0.0], [0.5, 0.5]])
    chart = figures.embedding_map(coords, ["a", "b", None], ["x.png", "y.png", "z.png"], query=(0.2, 0.3), query_name="q.jpg")
    points, query = chart.layer
    assert [(r["x"], r["y"], r["label"], r["name"]) for r in rows(points)] == [
        (0.0, 1.0, "a", "x.png"), (1.0, 0.0, "b", "y.png"), (0.5, 0.5, "(unlabelled)", "z.png")]
    assert rows(query) == [{"x": 0.2, "y": 0.3, "name": "q.jpg"}]
    tooltips = [t.shorthand for t in points.encoding.tooltip]
    assert "name:N" in tooltips
    valid(chart)


def test_embedding_map_draws_the_pictures_given_between_the_points_and_the_query():
    coords = np.array([[0.0, 1.0], [1.0, 0.0], [0.5, 0.5]])
    url = "data:image/png;base64,iVBORw0KGgo="
    chart = figures.embedding_map(coords, ["a", "b", "a"], ["x.png", "y.png", "z.png"], query=(0.2, 0.3),
                                  pictures=[url, None, url], picture_px=24)
    points, frames, pictures, query = chart.layer
    scales = valid(chart)["layer"][0]["encoding"]
    assert scales["x"]["scale"]["padding"] >= 30 / 2 and scales["y"]["scale"]["padding"] >= 30 / 2, \
        "the axes reach half a picture beyond the outermost points: an edge picture is whole"
    assert [(r["x"], r["y"], r["name"], r["picture"]) for r in rows(pictures)] == [(0.0, 1.0, "x.png", url), (0.5, 0.5, "z.png", url)]
    assert [r["label"] for r in rows(frames)] == ["a", "a"] and frames.mark.size == (24 + 6) ** 2
    spec = valid(chart)["layer"][2]
    assert spec["mark"] == {"type": "image", "width": 24, "height": 24}
    assert spec["encoding"]["url"]["field"] == "picture"
    assert rows(query)[0]["name"] == "query"
    assert len(figures.embedding_map(coords, None, ["x", "y", "z"], pictures=[None] * 3).layer) == 1  # none to draw


def test_embedding_map_without_query_and_many_classes_drops_the_legend():
    n = figures.LEGEND_MAX_CLASSES + 5
    chart = figures.embedding_map(np.zeros((n, 2)), [f"c{i}" for i in range(n)], [f"{i}.png" for i in range(n)])
    assert len(chart.layer) == 1
    assert valid(chart)["layer"][0]["encoding"]["color"]["legend"] is None


def test_embedding_map_without_labels_has_one_colour_and_by_folder_names_the_legend():
    coords = np.array([[0.0, 1.0], [1.0, 0.0]])
    plain = valid(figures.embedding_map(coords, None, ["x.png", "y.png"], query=(0.1, 0.1)))
    points = plain["layer"][0]
    assert "color" not in points["encoding"] and "label" not in json.dumps(points["encoding"])
    assert [t["field"] for t in points["encoding"]["tooltip"]] == ["name"]
    by_folder = valid(figures.embedding_map(coords, ["shop", "web"], ["x.png", "y.png"], colour_title="folder"))
    assert by_folder["layer"][0]["encoding"]["color"]["legend"]["title"] == "folder"


def test_training_curves_one_row_per_present_metric_value():
    metrics = [
        {"epoch": 0, "loss": None, "active_fraction": None, "recall_at_1": 0.2, "map_at_r": 0.1},
        {"epoch": 1, "loss": 0.4, "active_fraction": 0.7, "recall_at_1": 0.5, "map_at_r": 0.3},
        {"epoch": 2, "loss": 0.3, "active_fraction": 0.6, "recall_at_1": None, "map_at_r": float("nan")},
    ]
    chart = figures.training_curves(metrics)
    assert isinstance(chart, alt.FacetChart)
    data = rows(chart)
    assert len(data) == 2 + 4 + 2
    titles = figures.TRAINING_METRICS
    assert {"epoch": 1, "metric": titles["loss"], "value": 0.4} in data
    assert not any(r["epoch"] == 0 and r["metric"] == titles["loss"] for r in data)
    valid(chart)


def test_distance_histogram_bins_both_kinds_as_shares_with_margin_and_threshold_lines():
    positive = [0.1, 0.15, 0.5, 0.55]
    negative = [0.9, 1.0, 1.1, 1.9, 0.52]
    chart = figures.distance_histogram(positive, negative, 0.2, median_positive=0.325, bin_width=0.1)
    hist, rules, texts = chart.layer
    assert len({r["offset"] for r in rows(texts)}) == 2  # the two labels on lines of their own, never on top of each other
    data = rows(hist)
    assert len(data) == 2 * 20
    for kind, values in (("positive pairs", positive), ("negative pairs", negative)):
        mine = [r for r in data if r["pairs"] == kind]
        assert sum(r["count"] for r in mine) == len(values)
        assert sum(r["share"] for r in mine) == pytest.approx(1.0)
    assert [r["x"] for r in rows(rules)] == [0.2, pytest.approx(0.525)]
    valid(chart)


def test_distance_histogram_with_no_pairs_is_still_a_chart():
    chart = figures.distance_histogram([], [], 0.3)
    assert all(r["count"] == 0 for r in rows(chart.layer[0]))
    assert [r["x"] for r in rows(chart.layer[1])] == [0.3]
    valid(chart)


def test_figures_module_does_not_import_streamlit():
    import subprocess
    import sys

    code = "import sys, retrieval.figures, retrieval.diagnostics; sys.exit('streamlit' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0


def resolve_datasets(spec: dict) -> dict:
    """The spec with each layer's named dataset replaced by its rows (names differ, content must not)."""
    spec = json.loads(json.dumps(spec))
    datasets = spec.pop("datasets", {})
    for layer in spec["layer"]:
        layer["data"] = datasets[layer["data"]["name"]]
    return spec


@pytest.mark.parametrize("query_label, labels", [
    (None, ["a", "b", "a"]),
    ("a", ["a", "b", None]),
    ("a", [f"c{i}" for i in range(15)]),
    (None, [f"c{i}" for i in range(30)]),
])
def test_margin_spec_is_the_margin_chart_as_vega_lite(query_label, labels):
    found = neighbours([0.2 + 0.01 * i for i in range(len(labels))], labels)
    with alt.theme.enable("none"):
        expected = figures.margin_chart(found, 0.25, query_label=query_label).to_dict()
    assert resolve_datasets(figures.margin_spec(found, 0.25, query_label=query_label)) == resolve_datasets(expected)


def test_margin_spec_does_not_share_state_between_calls():
    first = figures.margin_spec(neighbours([0.1], ["a"]), 0.2)
    second = figures.margin_spec(neighbours([0.5, 0.6], ["a", "b"]), 0.2)
    assert len(first["datasets"]["bars"]) == 1 and len(second["datasets"]["bars"]) == 2
    assert first["layer"][1]["encoding"]["y"]["scale"]["domain"] != second["layer"][1]["encoding"]["y"]["scale"]["domain"]


@pytest.mark.parametrize("threshold", [None, 0.4])
def test_margin_spec_without_a_margin_has_no_band_and_keeps_the_rest(threshold):
    found = neighbours([0.2, 0.3], ["a", "b"])
    with_band = figures.margin_spec(found, 0.25, threshold=threshold)
    without = figures.margin_spec(found, None, threshold=threshold)
    names = [layer["data"]["name"] for layer in without["layer"]]
    assert "band" not in names and "text" not in names and "rule" not in names and "bars" in names  # no unexplained line at d₁
    assert set(without["datasets"]) == set(names)
    assert ("tau" in names) == (threshold is not None)
    kept = [layer for layer in with_band["layer"] if layer["data"]["name"] in names]
    assert [(layer["data"], layer["mark"]) for layer in kept] == [(layer["data"], layer["mark"]) for layer in without["layer"]]
    top = without["layer"][0]["encoding"]["y"]["scale"]["domain"][1]
    assert top == pytest.approx(max(0.3, threshold or 0) * 1.08), "the y scale fits the bars (and τ), no band above them"


@pytest.mark.parametrize("kind", ["roc", "det"])
def test_a_threshold_accepting_no_different_class_pair_sits_on_the_curve_at_its_left_edge(kind):
    from retrieval.verification import rates_at, roc_points

    rng = np.random.default_rng(0)
    positive, negative = rng.uniform(0.0, 0.8, 400), rng.uniform(0.5, 1.5, 600)
    tau = 0.45  # below every different-class distance: FAR 0, TAR about 0.56
    far, frr = rates_at(tau, positive, negative)
    assert far == 0 and 0.3 < 1 - frr < 0.8
    chart = figures.roc_chart(roc_points(positive, negative), kind=kind,
                              chosen=[{"name": "stored τ", "far": far, "tar": 1 - frr, "threshold": tau}]).to_dict()
    rows = lambda i: chart["datasets"][chart["layer"][i]["data"]["name"]]  # noqa: E731
    curve, (mark,) = rows(0), rows(1)
    smallest = min(p["far"] for p in curve if p["far"] > 0)
    assert mark["x"] == pytest.approx(smallest / 2) and mark["far"] == 0  # drawn at the left edge, its FAR kept for the tooltip
    assert chart["layer"][0]["encoding"]["x"]["field"] == "x" and all(p["x"] > 0 for p in curve)
    at_edge = [p for p in curve if p["x"] == mark["x"]]
    key = "tar" if kind == "roc" else "frr"
    assert at_edge and max(p["tar"] for p in at_edge) >= 1 - frr  # the curve reaches the dot's height at that FAR
    if kind == "det":
        assert all(p["frr"] > 0 for p in curve)
    assert min(p[key] for p in at_edge) <= mark[key] <= max(p[key] for p in at_edge)


def test_the_active_fraction_is_titled_for_a_loss_without_a_margin():
    metrics = [{"epoch": 1, "loss": 0.5, "active_fraction": 0.8}]
    titles = lambda chart: {r["metric"] for r in chart.to_dict()["datasets"].popitem()[1]}  # noqa: E731
    assert titles(figures.training_curves(metrics)) == {"training loss", "active fraction (loss > 0)"}
    assert titles(figures.training_curves(metrics, margin_loss=False)) == {"training loss", figures.ACTIVE_WITHOUT_MARGIN}


def test_distance_histogram_fits_its_axis_and_bins_to_the_distances_and_rules_it_shows():
    """A face run's distances all lay below 0.7 over an axis of 0 to 2: half the positives in one bar,
    τ inside the first. The axis now reaches the largest distance or rule shown, plus a tenth."""
    positive, negative = [0.01, 0.02, 0.03, 0.05], [0.2, 0.4, 0.62]
    chart = figures.distance_histogram(positive, negative, 0.2, median_positive=0.03, threshold=0.063)
    data = rows(chart.layer[0])
    ends = sorted({r["end"] for r in data})
    assert ends[-1] == pytest.approx(0.7) and len(ends) == 40, "0.62 · 1.1 rounded up to 0.1: 40 bins of 0.0175"
    positives = [r for r in data if r["pairs"] == "positive pairs" and r["count"]]
    assert len(positives) == 3, "the four positive distances fall in three bars, not one"
    spec = chart.to_dict()
    assert any(layer.get("encoding", {}).get("x", {}).get("scale", {}).get("domain") == [0, 0.7] for layer in spec["layer"])
    wide = figures.distance_histogram([0.1], [1.95], 0.2)
    assert sorted({r["end"] for r in rows(wide.layer[0])})[-1] == pytest.approx(2.0), "never beyond 2"
    valid(chart)
