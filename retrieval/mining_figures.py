"""The Hardest negatives page's charts, as Altair (Vega-Lite) specifications built from plain data
(as :mod:`retrieval.figures`, whose helpers they share; nothing here imports streamlit).

- :func:`hardness_chart` (:func:`hardness_panels` apart): per epoch, the d_an − d_ap of the logged
  hardest triplets (each one, coloured by whether the miner kept it, and their mean, with 0 and ε),
  how many lie below 0, inside the margin or beyond it, and the active, violating and per-anchor
  fractions.
- :func:`confusion_chart` (:func:`confusion_history_chart` apart): the class confusions of
  training, one epoch's most confused class pairs as ranked bars and their rate over the epochs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import altair as alt

from retrieval.diagnostics import GAP_ZONES
from retrieval.figures import BAND_COLOUR, inline_data

__all__ = ["FRACTIONS_WITHOUT_MARGIN", "confusion_chart", "confusion_history_chart", "hardness_chart", "hardness_panels"]


def hardness_chart(rows: Sequence[Mapping[str, Any]], margin: float | None = None, *,
                   gaps: Sequence[Mapping[str, Any]] | None = None, zones: Sequence[Mapping[str, Any]] | None = None,
                   margin_loss: bool = True, width: int = 300, height: int = 200) -> alt.HConcatChart:
    """Panels over the epochs (``rows``: :func:`retrieval.diagnostics.hardness_by_epoch`):

    - the mean d_an − d_ap of the logged hardest triplets (a rule at the margin: triplets below it
      still have a loss) and, given ``gaps`` (:func:`~retrieval.diagnostics.logged_gaps`), every
      logged triplet as a point coloured by whether the miner kept it, with a rule at 0 (below it
      the negative lies nearer than the positive);
    - given ``zones`` (:func:`~retrieval.diagnostics.gap_zone_counts`), how many logged triplets lie
      below 0, inside the margin or beyond it, as stacked bars, the miner's in full colour;
    - from ``metrics.jsonl``: the fraction of mined triplets with a loss, of all valid triplets
      inside the margin, and of anchors whose nearest negative is nearer than their farthest
      positive or within ε of it. ``margin_loss`` False (InfoNCE, NCE, N-pair: every tuple has a
      loss): these are titled by ε, the yardstick the log measures against
      (:data:`FRACTIONS_WITHOUT_MARGIN`), not by a loss above 0.

    The panels side by side; :func:`hardness_panels` gives them apart (a page lays them out in
    columns that fit its width)."""
    panels = hardness_panels(rows, margin, gaps=gaps, zones=zones, margin_loss=margin_loss, width=width, height=height)
    # each panel its own colours and legend: concatenated views share one colour scale otherwise,
    # and the panels' domains (mined / zone / fraction) would be merged into one palette
    return alt.hconcat(*panels).resolve_scale(color="independent", opacity="independent")


def hardness_panels(rows: Sequence[Mapping[str, Any]], margin: float | None = None, *,
                    gaps: Sequence[Mapping[str, Any]] | None = None, zones: Sequence[Mapping[str, Any]] | None = None,
                    margin_loss: bool = True, width: int | str = 300, height: int = 200) -> list[alt.Chart | alt.LayerChart]:
    """:func:`hardness_chart`'s panels, each a chart of its own (``width="container"``: as wide as
    the column a page puts it in): the gaps, the zones (given ``zones``) and the fractions."""
    x = alt.X("epoch:Q", title="epoch", axis=alt.Axis(tickMinStep=1, format="d"))
    limit = width if isinstance(width, int) else 220  # a column of a 1400 px page: about 300 px
    panels = [_gap_panel(rows, margin, gaps, x, width, height)]
    if zones is not None:
        panels.append(_zone_panel(zones, width, height, limit, margin_loss))
    panels.append(_fraction_panel(rows, x, width, height, _FRACTIONS if margin_loss else FRACTIONS_WITHOUT_MARGIN, limit))
    return [panel.properties(**_fit_width(width)) for panel in panels]


_MINED_STATUS = ("mined", "not mined", "not recorded")
_FRACTIONS = {
    "active_fraction": "mined triplets with loss > 0",
    "violating_fraction": "all triplets inside the margin",
    "inverted_anchor_fraction": "anchors: a negative nearer than a positive",
    "violating_anchor_fraction": "anchors: a negative inside the margin",
}
#: the same lines' titles for a loss without a margin, where every mined tuple has a loss and ε is
#: only the log's yardstick (metrics.jsonl's active fraction is then the kept triplets within ε)
FRACTIONS_WITHOUT_MARGIN = {
    "active_fraction": "mined triplets within ε (no margin in the loss)",
    "violating_fraction": "all triplets within ε",
    "inverted_anchor_fraction": _FRACTIONS["inverted_anchor_fraction"],
    "violating_anchor_fraction": "anchors: a negative within ε",
}


def _gap_panel(rows, margin, gaps, x, width, height):
    gap_rows = [{"epoch": int(r["epoch"]), "mean_gap": float(r["mean_gap"]),
                 "n_logged": r.get("n_logged"), "n_violating": r.get("n_violating")}
                for r in rows if r.get("mean_gap") is not None]
    layers = [alt.Chart(inline_data(gap_rows)).mark_line(point=True, color="#333333").encode(
        x=x, y=alt.Y("mean_gap:Q", title="d_an − d_ap of logged hardest"),
        tooltip=["epoch:Q", alt.Tooltip("mean_gap:Q", format=".3f"), "n_logged:Q", "n_violating:Q"],
    )]
    if margin is not None:
        layers.append(alt.Chart(inline_data([{"margin": float(margin)}])).mark_rule(
            color=BAND_COLOUR, strokeDash=[4, 3]).encode(y="margin:Q"))
        layers.append(alt.Chart(inline_data([{"margin": float(margin), "text": f"ε = {float(margin):g}"}])).mark_text(
            align="left", baseline="bottom", dx=3, color=BAND_COLOUR).encode(y="margin:Q", x=alt.value(0), text="text:N"))
    if gaps is not None:
        layers.append(alt.Chart(inline_data([{k: r[k] for k in ("epoch", "gap", "mined", "zone")} for r in gaps])).mark_circle(
            size=28, opacity=0.55).encode(
            x=x, y="gap:Q",
            color=alt.Color("mined:N", title="logged triplet", legend=alt.Legend(orient="bottom", columns=1),
                            scale=alt.Scale(domain=list(_MINED_STATUS), range=["#4c78a8", "#e45756", "#9d9d9d"])),
            tooltip=["epoch:Q", alt.Tooltip("gap:Q", title="d_an − d_ap", format=".3f"), "mined:N", "zone:N"],
        ))
        layers.append(alt.Chart(inline_data([{"zero": 0.0}])).mark_rule(color="#888888").encode(y="zero:Q"))
    title = "How hard were the hardest?" if gaps is None else "The logged hardest, each epoch"
    panel = alt.layer(*layers) if len(layers) > 1 else layers[0]
    return panel.properties(title=title, width=width, height=height)


#: a loss without a margin: the zones are named by ε, the log's yardstick (the data keep GAP_ZONES' names)
_ZONES_WITHOUT_MARGIN = {"inside the margin": "within ε", "margin met": "ε or more"}


def _zone_panel(zones, width, height, label_limit, margin_loss=True):
    renamed = " : ".join(f"datum.label == '{zone}' ? '{name}'" for zone, name in _ZONES_WITHOUT_MARGIN.items())
    legend = alt.Legend(orient="bottom", columns=1, labelLimit=label_limit,
                        **({} if margin_loss else {"labelExpr": f"{renamed} : datum.label"}))
    return alt.Chart(inline_data(zones)).mark_bar().encode(
        x=alt.X("epoch:O", title="epoch", axis=alt.Axis(labelAngle=0)),
        y=alt.Y("count:Q", title="logged triplets", stack="zero"),
        color=alt.Color("zone:N", title="d_an − d_ap", legend=legend,
                        scale=alt.Scale(domain=list(GAP_ZONES), range=["#e45756", BAND_COLOUR, "#54a24b"])),
        # above the plot: at its right it took the width of a narrow column (a 1024 px window with the sidebar
        # open), leaving no room for the bars; under it, beside the zones' legend, or in a row, it ran past the edge
        opacity=alt.Opacity("mined:N", title="miner", legend=alt.Legend(orient="top", direction="vertical", columns=1),
                            scale=alt.Scale(domain=list(_MINED_STATUS), range=[1.0, 0.4, 0.75])),
        order=alt.Order("mined:N"),
        tooltip=["epoch:O", "zone:N", "mined:N", "count:Q"],
    ).properties(title="Below 0, inside the margin, beyond it" if margin_loss else "Below 0, within ε, beyond it",
                 width=width, height=height)


def _fraction_panel(rows, x, width, height, titles, label_limit):
    fraction_rows = [{"epoch": int(r["epoch"]), "fraction": float(r[key]), "of": name}
                     for r in rows for key, name in titles.items() if r.get(key) is not None]
    return alt.Chart(inline_data(fraction_rows)).mark_line(point=True).encode(
        x=x, y=alt.Y("fraction:Q", title="fraction", scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("of:N", title=None, legend=alt.Legend(orient="bottom", columns=1, labelLimit=label_limit + 80),
                        scale=alt.Scale(domain=list(titles.values()), range=["#54a24b", "#e45756", "#b279a2", "#9d755d"])),
        tooltip=["epoch:Q", "of:N", alt.Tooltip("fraction:Q", format=".3f")],
    ).properties(title="Active fraction", width=width, height=height)


def confusion_chart(pairs: Sequence[Mapping[str, Any]], history: Sequence[Mapping[str, Any]] = (), *,
                    width: int | str = 320, bar_height: int = 20) -> alt.Chart | alt.HConcatChart:
    """The class confusions of training: one epoch's most confused ordered class pairs as ranked
    bars (``pairs``: :func:`retrieval.diagnostics.confused_pairs`; length: anchors of A whose
    nearest negative was of B; colour: the rate, that count over the anchors of A that met B) and,
    given ``history`` (:func:`~retrieval.diagnostics.confusion_history`), those pairs' rates over
    the epochs (:func:`confusion_history_chart`). ``width="container"``: as wide as the column a page
    puts it in (give the history apart, in a column of its own)."""
    bar_rows = [{"pair": f"{r['anchor_label']} → {r['negative_label']}", "nearest": int(r["nearest"]),
                 "met": r.get("met"), "batches": r.get("batches"), "anchors": r.get("anchors"),
                 "rate": r.get("rate"), "share": r.get("share")} for r in pairs]
    bars = alt.Chart(inline_data(bar_rows)).mark_bar().encode(
        y=alt.Y("pair:N", title=None, sort=[r["pair"] for r in bar_rows],  # the chart's subtitle says what a pair is
                axis=alt.Axis(labelOverlap=False, labelLimit=280)),  # every pair named, whole (Vega dropped every other one)
        x=alt.X("nearest:Q", title="anchors whose nearest negative was of that class"),
        color=alt.Color("rate:Q", title="rate (of meetings)", scale=alt.Scale(domain=[0, 1], scheme="orangered")),
        tooltip=["pair:N", "nearest:Q", alt.Tooltip("met:Q", title="anchors that met the class"),
                 alt.Tooltip("batches:Q", title="batches shared"), alt.Tooltip("rate:Q", format=".1%"),
                 alt.Tooltip("share:Q", title="share of the class's anchors", format=".1%")],
    ).properties(title=alt.TitleParams("Most confused class pairs", subtitle="anchor class → class of its nearest negative"),
                 width=width, height=max(1, len(bar_rows)) * bar_height,
                 **_fit_width(width))
    if not history:
        return bars
    lines = confusion_history_chart(history, width=width)
    return alt.hconcat(bars, lines).resolve_scale(color="independent")  # a rate scale beside a pair palette


def confusion_history_chart(history: Sequence[Mapping[str, Any]], *, width: int | str = 320, height: int = 220) -> alt.Chart:
    """The rate of some class pairs over the epochs (``history``: :func:`~retrieval.diagnostics.confusion_history`)."""
    return alt.Chart(inline_data(history)).mark_line(point=True).encode(
        x=alt.X("epoch:Q", axis=alt.Axis(tickMinStep=1, format="d")),
        y=alt.Y("rate:Q", title="rate", scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("pair:N", title=None, legend=alt.Legend(orient="bottom", columns=1, labelLimit=280)),
        tooltip=["epoch:Q", "pair:N", "nearest:Q", "met:Q", alt.Tooltip("rate:Q", format=".1%")],
    ).properties(title="Their rate over training", width=width, height=height, **_fit_width(width))


def _fit_width(width: int | str) -> dict[str, Any]:
    """A chart as wide as its column (``width="container"``) fits the width alone: the plot keeps its
    height and the legends come below it (Vega's default fit squeezes the plot to make room for them)."""
    return {"autosize": alt.AutoSizeParams(type="fit-x", contains="padding")} if width == "container" else {}
