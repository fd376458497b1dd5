"""The app's charts, as Altair (Vega-Lite) specifications built from plain data.

Each function takes lists / arrays (what :mod:`retrieval.run`, :mod:`retrieval.index` and
:mod:`retrieval.diagnostics` return) and returns an Altair chart whose data is inlined as a list of
row dicts (``alt.InlineData``), so a chart can be tested, saved (``chart.save("x.html")``) or shown
by any front end; nothing here imports streamlit.

- :func:`margin_chart`: a query's neighbours' distances as bars, coloured by label, with the
  training margin ε drawn as a band from the nearest distance d₁ to d₁ + ε: a bar that ends inside
  the band is within the margin of the best match. :func:`margin_spec` is the same chart as a
  Vega-Lite dict from a cached template, for redrawing on every query without Altair's cost.
- the Hardest negatives page's charts (the mining log's hardness, the class confusions of
  training) are in :mod:`retrieval.mining_figures`.
- :func:`embedding_map`: the 2-D projection of the gallery, coloured by class (or folder, or
  nothing), the query on it.
- :func:`training_curves`: loss, active fraction, Recall@1, MAP@R and EER over the epochs.
- :func:`distance_histogram`: positive- against negative-pair distances on held-out classes,
  with the margin lines and the decision threshold τ;
- :func:`roc_chart`: the ROC (TAR against FAR) or DET curve (FRR against FAR) of held-out pairs,
  with the run's τ and a tried target FAR marked.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import altair as alt
import numpy as np

__all__ = [
    "BAND_COLOUR",
    "LEGEND_MAX_CLASSES",
    "TRAINING_METRICS",
    "distance_histogram",
    "embedding_map",
    "inline_data",
    "margin_chart",
    "margin_spec",
    "roc_chart",
    "training_curves",
]

LEGEND_MAX_CLASSES = 20
"""Above this many classes a colour legend is unreadable: the class is shown on hover instead."""

TRAINING_METRICS = {
    "loss": "training loss",
    "active_fraction": "active fraction (loss > 0)",
    "recall_at_1": "Recall@1 (held-out classes)",
    "map_at_r": "MAP@R (held-out classes)",
    "eer": "EER (held-out pairs)",
}

BAND_COLOUR = "#f58518"  # the margin ε, wherever it is drawn
_QUERY_COLOUR = "#000000"


def inline_data(rows: Sequence[Mapping[str, Any]]) -> alt.InlineData:
    """Row dicts as a chart's inlined data (every chart here carries its data with it)."""
    return alt.InlineData(values=[dict(row) for row in rows])


def _colour(field: str, title: str, n_classes: int) -> alt.Color:
    legend = alt.Legend(title=title, symbolLimit=LEGEND_MAX_CLASSES) if n_classes <= LEGEND_MAX_CLASSES else None
    scheme = "tableau10" if n_classes <= 10 else "tableau20"
    return alt.Color(f"{field}:N", legend=legend, scale=alt.Scale(scheme=scheme))


# ----------------------------------------------------------------------------- search


def margin_chart(neighbours: Sequence[Any], margin: float, *, query_label: str | None = None,
                 threshold: float | None = None, target_far: float | None = None, height: int = 260) -> alt.LayerChart:
    """Bars of the neighbours' distances (nearest first), coloured by label, with the margin band
    [d₁, d₁ + margin] above the nearest distance d₁ and a rule at d₁; given the run's decision
    ``threshold`` τ (chosen at ``target_far``), a rule at τ: a bar that ends below it is a match.

    ``neighbours`` are :class:`~retrieval.index.Neighbour` records (or objects with ``path``,
    ``label``, ``distance``, ``similarity``). Layers: 0 the band, 1 the bars, 2 the rule at d₁,
    3-4 the band's label (its white halo, then the text), and with a threshold 5 the rule at τ,
    6-7 its label. Returns an empty-data chart for no neighbours.
    """
    data = _margin_data(neighbours, margin, query_label, threshold, target_far)
    return _margin_layers(data, query_label is not None, _legend_bucket(data["n_labels"]), height)


def margin_spec(neighbours: Sequence[Any], margin: float | None, *, query_label: str | None = None,
                threshold: float | None = None, target_far: float | None = None, height: int = 260) -> dict[str, Any]:
    """``margin_chart(...).to_dict()`` (under Altair's "none" theme, as Streamlit renders it) in
    well under a millisecond: the chart's structure is built and validated by Altair once per
    shape (query label given or not, threshold or not, legend kind, height) and each call only
    fills in the data (as named ``datasets``) and the y scale. For front ends that redraw on every query.
    ``margin`` None (a run whose loss has no margin): the distances without the ε band, the rule at
    its lower edge and its label."""
    data = _margin_data(neighbours, margin or 0.0, query_label, threshold, target_far)
    template = _margin_template(query_label is not None, _legend_bucket(data["n_labels"]), height, threshold is not None)
    spec = copy.deepcopy(template)
    shown = [name for name in _MARGIN_LAYERS + (_THRESHOLD_LAYERS if threshold is not None else ())
             if margin is not None or name not in _BAND_LAYERS]
    spec["layer"] = [layer for layer in spec["layer"] if layer.get("data", {}).get("name") in shown]
    spec["datasets"] = {name: data[name] for name in shown}
    for layer in spec["layer"]:
        layer["encoding"]["y"]["scale"]["domain"] = [0, data["y_max"]]
    return spec


_MARGIN_LAYERS = ("band", "bars", "rule", "text")
_BAND_LAYERS = ("band", "rule", "text")  # the ε band, its lower edge at d₁ and its label
_THRESHOLD_LAYERS = ("tau", "tau_text")
_THRESHOLD_COLOUR = "#54a24b"


def _margin_data(neighbours: Sequence[Any], margin: float, query_label: str | None, threshold: float | None = None,
                 target_far: float | None = None) -> dict[str, Any]:
    rows = []
    for rank, n in enumerate(neighbours, start=1):
        label = "(unlabelled)" if n.label is None else str(n.label)
        relation = ("" if query_label is None or n.label is None
                    else ("positive" if str(n.label) == str(query_label) else "negative"))
        rows.append({
            "rank": rank, "name": Path(str(n.path)).name, "label": label,
            "distance": round(float(n.distance), 5), "similarity": round(float(n.similarity), 5),
            "relation": relation,
        })
    nearest = rows[0]["distance"] if rows else 0.0
    top = nearest + float(margin)
    data = {
        "bars": rows,
        "band": [{"low": nearest, "high": top, "margin": float(margin)}],
        "rule": [{"nearest": nearest}],
        "text": [{"high": top, "text": f"within ε = {float(margin):g} of the best match"}],
        "y_max": max([top] + [r["distance"] for r in rows] + ([float(threshold)] if threshold is not None else [])) * 1.08 or 1.0,
        "n_labels": len({r["label"] for r in rows}),
    }
    if threshold is not None:
        at = "" if target_far is None else f" (FAR {100 * float(target_far):.3g} %)"
        data["tau"] = [{"threshold": round(float(threshold), 5), "target_far": target_far}]
        data["tau_text"] = [{"threshold": round(float(threshold), 5), "text": f"τ = {float(threshold):.3f}{at}: match below"}]
    return data


def _legend_bucket(n_labels: int) -> int:
    """Classes count as far as the colour encoding cares: scheme tableau10 / tableau20, legend or none."""
    return 10 if n_labels <= 10 else (LEGEND_MAX_CLASSES if n_labels <= LEGEND_MAX_CLASSES else LEGEND_MAX_CLASSES + 1)


@functools.lru_cache(maxsize=32)
def _margin_template(with_relation: bool, n_labels: int, height: int, with_threshold: bool = False) -> dict[str, Any]:
    placeholder = {name: [] for name in _MARGIN_LAYERS + (_THRESHOLD_LAYERS if with_threshold else ())}
    placeholder["y_max"] = 1.0
    layers = _margin_layers(placeholder, with_relation, n_labels, height, named=True)
    with alt.theme.enable("none"):
        spec = layers.to_dict()
    spec.pop("datasets", None)
    return spec


def _margin_layers(data: Mapping[str, Any], with_relation: bool, n_labels: int, height: int, *,
                   named: bool = False) -> alt.LayerChart:
    """The margin chart's layers; ``named`` refers to datasets by layer name (for the template)."""
    source = (lambda name: alt.NamedData(name=name)) if named else (lambda name: inline_data(data[name]))
    domain = alt.Scale(domain=[0, data["y_max"]])
    band = alt.Chart(source("band")).mark_rect(color=BAND_COLOUR, opacity=0.18).encode(
        y=alt.Y("low:Q", scale=domain), y2="high:Q",
        tooltip=[alt.Tooltip("low:Q", title="nearest d₁", format=".3f"),
                 alt.Tooltip("high:Q", title="d₁ + ε", format=".3f"),
                 alt.Tooltip("margin:Q", title="margin ε")],
    )
    tooltip = [alt.Tooltip("rank:O"), alt.Tooltip("name:N"), alt.Tooltip("label:N"),
               alt.Tooltip("distance:Q", format=".3f"), alt.Tooltip("similarity:Q", title="cosine", format=".3f")]
    if with_relation:
        tooltip.append(alt.Tooltip("relation:N"))
    bars = alt.Chart(source("bars")).mark_bar(size=18).encode(
        x=alt.X("rank:O", title="neighbour (nearest first)", axis=alt.Axis(labelAngle=0)),
        y=alt.Y("distance:Q", title="distance to the query (0 to 2)", scale=domain),
        color=_colour("label", "label", n_labels),
        tooltip=tooltip,
    )
    rule = alt.Chart(source("rule")).mark_rule(color=BAND_COLOUR, strokeDash=[4, 3]).encode(
        y=alt.Y("nearest:Q", scale=domain)
    )
    layers = [band, bars, rule, *_haloed_label(source("text"), "high:Q", domain, BAND_COLOUR, baseline="bottom", dy=-2)]
    if "tau" in data:  # the decision threshold τ: a neighbour below it is a match
        layers.append(alt.Chart(source("tau")).mark_rule(color=_THRESHOLD_COLOUR, strokeWidth=2).encode(
            y=alt.Y("threshold:Q", scale=domain),
            tooltip=[alt.Tooltip("threshold:Q", title="threshold τ", format=".3f"), alt.Tooltip("target_far:Q", title="target FAR")]))
        # at the right edge: τ often lies near the band's top, whose label is at the left edge (they overlapped)
        layers += _haloed_label(source("tau_text"), "threshold:Q", domain, _THRESHOLD_COLOUR, baseline="top", dy=2, right=True)
    return alt.layer(*layers).properties(height=height)


def _haloed_label(source, y: str, domain: alt.Scale, colour: str, *, baseline: str, dy: int,
                  right: bool = False) -> list[alt.Chart]:
    """A rule's label at the chart's left edge (``right``: its right edge), as two layers of the same
    text: a white outline (the halo) under the coloured letters, so a bar that crosses the label
    leaves it readable."""
    def text(**style):
        return alt.Chart(source).mark_text(align="right" if right else "left", baseline=baseline, dx=-4 if right else 4, dy=dy,
                                           fontSize=11, **style).encode(
            y=alt.Y(y, scale=domain), x=alt.value(alt.expr("width")) if right else alt.value(0), text="text:N")

    return [text(color="white", stroke="white", strokeWidth=3, strokeJoin="round", opacity=0.85), text(color=colour)]


# ----------------------------------------------------------------------------- embedding map


def embedding_map(coords: np.ndarray, labels: Sequence[str | None] | None, names: Sequence[str], *,
                  query: Sequence[float] | None = None, query_name: str = "query",
                  colour_title: str = "class", pictures: Sequence[str | None] | None = None,
                  picture_px: int = 30, height: int = 520) -> alt.LayerChart:
    """A scatter of gallery points ``coords`` (n, 2) coloured by label, with the image name on
    hover; ``query`` (x, y) is drawn as a black cross on top. Layer 0 is the gallery; then, when
    ``pictures`` is given (an image URL, e.g. ``data:image/jpeg;base64,...``, or None per point),
    with labels a square frame in the point's class colour behind each picture, and the pictures,
    ``picture_px`` wide, centred on their points; the last layer (when a query is given) is the
    query. Zoom and pan with the mouse.

    ``colour_title`` names what the labels are (legend and tooltip: "class", "folder", ...);
    ``labels=None`` draws every point in one colour, without a legend (a gallery without labels)."""
    coords = np.asarray(coords, dtype=np.float64).reshape(-1, 2)
    # the axes reach half a picture (and its frame) beyond the outermost points: a picture there is whole
    padded = alt.Scale(padding=(picture_px + 6) / 2 + 2 if pictures is not None else 5, zero=False)
    if labels is None:
        rows = [{"x": round(float(x), 5), "y": round(float(y), 5), "name": str(name)}
                for (x, y), name in zip(coords, names)]
        points = alt.Chart(inline_data(rows)).mark_circle(size=40, opacity=0.75, color="#4c78a8").encode(
            x=alt.X("x:Q", title="axis 1", scale=padded), y=alt.Y("y:Q", title="axis 2", scale=padded),
            tooltip=[alt.Tooltip("name:N", title="image")],
        )
    else:
        rows = [{"x": round(float(x), 5), "y": round(float(y), 5),
                 "label": "(unlabelled)" if label is None else str(label), "name": str(name)}
                for (x, y), label, name in zip(coords, labels, names)]
        n_labels = len({r["label"] for r in rows})
        points = alt.Chart(inline_data(rows)).mark_circle(size=40, opacity=0.75).encode(
            x=alt.X("x:Q", title="axis 1", scale=padded), y=alt.Y("y:Q", title="axis 2", scale=padded),
            color=_colour("label", colour_title, n_labels),
            tooltip=[alt.Tooltip("name:N", title="image"), alt.Tooltip("label:N", title=colour_title)],
        )
    layers = [points]
    if pictures is not None:
        shown = [{**row, "picture": url} for row, url in zip(rows, pictures) if url is not None]
        if shown:
            if labels is not None:  # a frame in the class colour behind each picture: the colours stay visible
                layers.append(alt.Chart(inline_data(shown)).mark_square(size=(picture_px + 6) ** 2, opacity=0.9).encode(
                    x="x:Q", y="y:Q", color=_colour("label", colour_title, n_labels),
                    tooltip=[alt.Tooltip("name:N", title="image"), alt.Tooltip("label:N", title=colour_title)]))
            layers.append(alt.Chart(inline_data(shown)).mark_image(width=picture_px, height=picture_px).encode(
                x="x:Q", y="y:Q", url="picture:N", tooltip=[alt.Tooltip("name:N", title="image")]))
    if query is not None:
        qx, qy = (float(v) for v in query)
        layers.append(alt.Chart(inline_data([{"x": qx, "y": qy, "name": query_name}])).mark_point(
            shape="cross", size=400, filled=True, color=_QUERY_COLOUR, strokeWidth=1
        ).encode(x="x:Q", y="y:Q", tooltip=[alt.Tooltip("name:N", title="query")]))
    return alt.layer(*layers).properties(height=height).interactive()


# ----------------------------------------------------------------------------- training


#: the active fraction's title for a loss without a margin (InfoNCE, NCE, N-pair), where every tuple
#: has a loss: what metrics.jsonl counts then is the kept triplets within ε, a yardstick
ACTIVE_WITHOUT_MARGIN = "active fraction (within ε; the loss has no margin)"


def training_curves(metrics: Sequence[Mapping[str, Any]], *, margin_loss: bool = True, width: int = 300,
                    height: int = 170) -> alt.FacetChart:
    """One panel per metric of ``TRAINING_METRICS`` (loss, active fraction, Recall@1, MAP@R, EER)
    against the epoch; rows of ``metrics.jsonl`` with a missing value (epoch 0 has no loss) are
    left out of that panel. ``margin_loss`` False (InfoNCE, NCE, N-pair): the active fraction is
    titled :data:`ACTIVE_WITHOUT_MARGIN`. Data rows: ``{"epoch", "metric", "value"}``."""
    titles = dict(TRAINING_METRICS, **({} if margin_loss else {"active_fraction": ACTIVE_WITHOUT_MARGIN}))
    rows = []
    for row in metrics:
        for key, title in titles.items():
            value = row.get(key)
            if value is not None and np.isfinite(float(value)):
                rows.append({"epoch": int(row["epoch"]), "metric": title, "value": float(value)})
    base = alt.Chart().mark_line(point=True).encode(
        x=alt.X("epoch:Q", axis=alt.Axis(tickMinStep=1, format="d")),
        y=alt.Y("value:Q", title=None),
        tooltip=["epoch:Q", "metric:N", alt.Tooltip("value:Q", format=".4f")],
    ).properties(width=width, height=height)
    return alt.FacetChart(
        data=inline_data(rows), spec=base,
        facet=alt.Facet("metric:N", sort=list(titles.values()), title=None),
        columns=2,
    ).resolve_scale(y="independent")


def distance_histogram(positive: Sequence[float], negative: Sequence[float], margin: float, *,
                       median_positive: float | None = None, threshold: float | None = None, bin_width: float | None = None,
                       height: int = 260) -> alt.LayerChart:
    """Histograms of positive- and negative-pair distances (each as a share of its own pairs, so
    few positives are not drowned by many negatives), binned over [0, reach], reach the largest of
    the distances and the rules drawn, plus a tenth, rounded up to 0.1 (at most 2, the largest
    distance): a face run whose distances all lie below 0.7 got 0.04-wide bins over [0, 2], half its
    positives in one bar and τ inside the first; ``bin_width`` defaults to reach / 40. A rule at the
    margin ε and, when ``median_positive`` is given, a dashed rule at median d_ap + ε (a negative
    left of it violates the margin for a typical positive), and given the decision ``threshold`` τ
    a rule at it. Layer 0 is the histogram (rows ``{"pairs", "start", "end", "share", "count"}``),
    then the margin rules and their labels, then the τ rule and its label."""
    shown = [*np.asarray(positive, dtype=np.float64).ravel(), *np.asarray(negative, dtype=np.float64).ravel(), float(margin),
             *([float(median_positive) + float(margin)] if median_positive is not None else []),
             *([float(threshold)] if threshold is not None else [])]
    reach = min(2.0, max(0.2, math.ceil(round(max(shown) * 1.1 * 10, 6)) / 10))
    bin_width = reach / 40 if bin_width is None else bin_width
    edges = np.arange(0.0, reach + bin_width / 2, bin_width)
    rows = []
    for kind, values in (("positive pairs", positive), ("negative pairs", negative)):
        values = np.asarray(values, dtype=np.float64)
        counts, _ = np.histogram(values, bins=edges)
        total = max(int(values.size), 1)
        rows.extend({"pairs": kind, "start": round(float(lo), 4), "end": round(float(hi), 4),
                     "count": int(c), "share": float(c) / total}
                    for lo, hi, c in zip(edges[:-1], edges[1:], counts))
    hist = alt.Chart(inline_data(rows)).mark_rect(opacity=0.55).encode(
        x=alt.X("start:Q", title="distance between the pair's embeddings", scale=alt.Scale(domain=[0, reach])),
        x2="end:Q",
        y=alt.Y("share:Q", title="share of pairs", axis=alt.Axis(format="%")),
        y2=alt.datum(0),
        color=alt.Color("pairs:N", title=None, legend=alt.Legend(orient="bottom"),
                        scale=alt.Scale(domain=["positive pairs", "negative pairs"], range=["#4c78a8", "#e45756"])),
        tooltip=["pairs:N", alt.Tooltip("start:Q", format=".2f"), alt.Tooltip("end:Q", format=".2f"), "count:Q",
                 alt.Tooltip("share:Q", format=".1%")],
    )
    lines = [{"x": float(margin), "text": f"ε = {float(margin):g}", "dash": "margin", "offset": 0}]
    if median_positive is not None:  # its label a line lower: the two rules are often close
        lines.append({"x": float(median_positive) + float(margin), "text": "median d_ap + ε", "dash": "threshold", "offset": 14})
    rules = alt.Chart(inline_data(lines)).mark_rule(color=BAND_COLOUR, strokeWidth=2).encode(
        x="x:Q", strokeDash=alt.StrokeDash("dash:N", legend=None,
                                           scale=alt.Scale(domain=["margin", "threshold"], range=[[1, 0], [5, 4]])),
        tooltip=["text:N", alt.Tooltip("x:Q", format=".3f")],
    )
    texts = alt.Chart(inline_data(lines)).mark_text(align="left", baseline="top", dx=3, dy=2, color=BAND_COLOUR).encode(
        x="x:Q", y=alt.Y("offset:Q", scale=None), text="text:N")  # offset: pixels from the top
    layers = [hist, rules, texts]
    if threshold is not None:  # the decision threshold τ: pairs left of it are called the same
        tau = inline_data([{"x": float(threshold), "text": "τ: same ← | → different"}])
        layers.append(alt.Chart(tau).mark_rule(color=_THRESHOLD_COLOUR, strokeWidth=2).encode(
            x="x:Q", tooltip=[alt.Tooltip("x:Q", title="threshold τ", format=".3f")]))
        layers.append(alt.Chart(tau).mark_text(align="center", baseline="bottom", dy=-2, color=_THRESHOLD_COLOUR).encode(
            x="x:Q", y=alt.value(0), text="text:N"))
    return alt.layer(*layers).properties(height=height)


def roc_chart(points: Sequence[Mapping[str, Any]], *, kind: str = "roc", chosen: Sequence[Mapping[str, Any]] = (),
              height: int = 260) -> alt.LayerChart:
    """The verification trade-off over every threshold (``points``: :func:`retrieval.verification.roc_points`):
    ``kind="roc"`` draws TAR against FAR, ``"det"`` FRR against FAR (the DET curve), FAR (and FRR)
    on log axes. A FAR of 0, which a log axis cannot show, is drawn at half the smallest FAR above 0
    (``x``; the tooltips give the FAR itself), so the curve starts where the strictest thresholds
    are and a τ that accepts no different-class pair sits on it; an FRR of 0 on the DET's log axis
    is left out. ``chosen`` rows ``{"name", "far", "tar", "threshold"}`` (the run's τ, a target FAR
    tried) are drawn as labelled dots. Layer 0 the curve, 1 the dots, 2 the first dot's label (above,
    to the left) and 3 the others' (below, to the right): two dots close together keep their labels apart."""
    y_key, y_title = ("tar", "TAR (same-class pairs accepted)") if kind == "roc" else ("frr", "FRR (same-class pairs rejected)")
    kept = [dict(p) for p in points if kind == "roc" or p["frr"] > 0]
    zero_far = min((p["far"] for p in kept if p["far"] > 0), default=2e-3) / 2
    curve = [{**p, "x": float(p["far"]) if p["far"] > 0 else zero_far} for p in kept]
    marks = [{**c, "frr": 1.0 - c["tar"], "x": float(c["far"]) if c["far"] > 0 else zero_far} for c in chosen]
    x = alt.X("x:Q", title="FAR (different-class pairs accepted), log", scale=alt.Scale(type="log"))
    y = alt.Y(f"{y_key}:Q", title=y_title, scale=alt.Scale(type="log") if kind == "det" else alt.Scale(domain=[0, 1]))
    line = alt.Chart(inline_data(curve)).mark_line(color="#4c78a8", interpolate="step-after").encode(
        x=x, y=y, tooltip=[alt.Tooltip("threshold:Q", format=".3f"), alt.Tooltip("far:Q", format=".4f"),
                           alt.Tooltip(f"{y_key}:Q", format=".3f")])
    dot_x = alt.X("x:Q", scale=alt.Scale(type="log"))
    dots = alt.Chart(inline_data(marks)).mark_point(filled=True, size=90).encode(
        x=dot_x, y=y, color=alt.Color("name:N", title=None, legend=alt.Legend(orient="bottom"),
                                      scale=alt.Scale(range=[_THRESHOLD_COLOUR, BAND_COLOUR, "#b279a2"])),
        tooltip=["name:N", alt.Tooltip("threshold:Q", title="τ", format=".3f"), alt.Tooltip("far:Q", format=".4f"),
                 alt.Tooltip(f"{y_key}:Q", format=".3f")])
    first = alt.Chart(inline_data(marks[:1])).mark_text(align="right", baseline="bottom", dx=-6, dy=-4).encode(x=dot_x, y=y, text="name:N")
    others = alt.Chart(inline_data(marks[1:])).mark_text(align="left", baseline="top", dx=6, dy=4).encode(x=dot_x, y=y, text="name:N")
    return alt.layer(line, dots, first, others).properties(height=height)
