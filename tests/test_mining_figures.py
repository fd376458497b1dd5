"""retrieval.mining_figures: the Hardest negatives page's charts, Altair charts with the expected
data and valid Vega-Lite specs."""

import altair as alt

from retrieval import mining_figures


def rows(chart) -> list[dict]:
    return list(chart.data.values)


def valid(chart) -> dict:
    spec = chart.to_dict()  # validates against the Vega-Lite schema
    return spec


def test_hardness_chart_plots_gap_and_active_fraction_per_epoch_with_margin_rule():
    hardness = [
        {"epoch": 0, "mean_gap": None, "n_logged": 0, "n_violating": None, "active_fraction": None},
        {"epoch": 1, "mean_gap": -0.05, "n_logged": 3, "n_violating": 3, "active_fraction": 0.8},
        {"epoch": 2, "mean_gap": 0.04, "n_logged": 3, "n_violating": 2, "active_fraction": 0.5},
        {"epoch": 3, "mean_gap": None, "n_logged": 0, "n_violating": None, "active_fraction": 0.4, "violating_fraction": 0.1},
    ]
    chart = mining_figures.hardness_chart(hardness, margin=0.2)
    assert isinstance(chart, alt.HConcatChart)
    gap_panel, active_panel = chart.hconcat
    gap_line, margin_rule, _label = gap_panel.layer
    assert [(r["epoch"], r["mean_gap"]) for r in rows(gap_line)] == [(1, -0.05), (2, 0.04)]
    assert rows(margin_rule)[0]["margin"] == 0.2
    assert [(r["epoch"], r["fraction"], r["of"]) for r in rows(active_panel)] == [
        (1, 0.8, "mined triplets with loss > 0"), (2, 0.5, "mined triplets with loss > 0"),
        (3, 0.4, "mined triplets with loss > 0"), (3, 0.1, "all triplets inside the margin")]
    valid(chart)


def test_hardness_chart_of_a_loss_without_a_margin_titles_its_fractions_by_epsilon_not_by_a_loss_above_0():
    """InfoNCE, NCE, N-pair: every mined tuple has a loss, so "loss > 0" would be every one of them;
    metrics.jsonl counts those within ε, and the legend says so, in the legend's colours."""
    hardness = [{"epoch": 1, "mean_gap": 0.1, "active_fraction": 0.3, "violating_fraction": 0.2,
                 "inverted_anchor_fraction": 0.1, "violating_anchor_fraction": 0.4}]
    chart = mining_figures.hardness_chart(hardness, 0.2, margin_loss=False)
    fractions = chart.hconcat[-1]
    titles = [r["of"] for r in rows(fractions)]
    assert titles == list(mining_figures.FRACTIONS_WITHOUT_MARGIN.values())
    assert not any("loss > 0" in title or "margin" in title.replace("no margin", "") for title in titles)
    assert valid(chart)["hconcat"][-1]["encoding"]["color"]["scale"]["domain"] == titles
    with_margin = [r["of"] for r in rows(mining_figures.hardness_chart(hardness, 0.2).hconcat[-1])]
    assert with_margin[0] == "mined triplets with loss > 0" and with_margin != titles
    zones = [{"epoch": 1, "zone": "inside the margin", "mined": "mined", "count": 1}]
    zone_panel = valid(mining_figures.hardness_chart(hardness, 0.2, zones=zones, margin_loss=False))["hconcat"][1]
    assert zone_panel["title"] == "Below 0, within ε, beyond it"
    assert "'within ε'" in zone_panel["encoding"]["color"]["legend"]["labelExpr"]


def test_hardness_panels_apart_fit_a_column_and_keep_their_height():
    """The app lays the panels out in columns (side by side at fixed widths they ran past a 1400 px page)."""
    hardness = [{"epoch": 1, "mean_gap": 0.1, "active_fraction": 0.3, "violating_fraction": 0.2}]
    zones = [{"epoch": 1, "zone": "inside the margin", "mined": "mined", "count": 1}]
    panels = mining_figures.hardness_panels(hardness, 0.2, gaps=[], zones=zones, width="container", height=200)
    assert len(panels) == 3
    for panel in panels:
        spec = valid(panel)
        assert spec["width"] == "container" and spec["height"] == 200
        assert spec["autosize"] == {"type": "fit-x", "contains": "padding"}, "the width fits the column, the height stays"
    legends = {key: channel["legend"] for key, channel in valid(panels[1])["encoding"].items()
               if isinstance(channel, dict) and channel.get("legend")}
    # none at the side, where it took a narrow column's width from the bars (a 1024 px window with the sidebar open)
    assert legends and all(legend["orient"] in ("top", "bottom") for legend in legends.values()), legends
    assert legends["opacity"]["orient"] == "top" and legends["opacity"]["columns"] == 1, "one entry a line: in a row it ran past the edge"


def test_concatenated_panels_keep_their_own_colours_and_legends():
    """Concatenated views share one colour scale unless told otherwise: the gap panel's "mined"
    blue would then also mean a zone and a fraction, and the panels' palettes would be lost."""
    hardness = [{"epoch": 1, "mean_gap": 0.1, "active_fraction": 0.3, "violating_fraction": 0.2}]
    gaps = [{"epoch": 1, "gap": 0.1, "mined": "mined", "zone": "inside the margin"}]
    zones = [{"epoch": 1, "zone": "inside the margin", "mined": "mined", "count": 1}]
    spec = valid(mining_figures.hardness_chart(hardness, 0.2, gaps=gaps, zones=zones))
    assert spec["resolve"]["scale"]["color"] == "independent"
    assert spec["resolve"]["scale"]["opacity"] == "independent"
    pairs = [{"anchor_label": "a", "negative_label": "b", "nearest": 3, "met": 4, "rate": 0.75}]
    history = [{"epoch": 1, "pair": "a → b", "rate": 0.75, "nearest": 3, "met": 4}]
    assert valid(mining_figures.confusion_chart(pairs, history))["resolve"]["scale"]["color"] == "independent"
    bars = valid(mining_figures.confusion_chart(pairs * 12))  # a dozen pairs: every one named, none dropped for overlap
    assert bars["encoding"]["y"]["axis"]["labelOverlap"] is False and bars["height"] == 12 * 20


def test_hardness_chart_without_margin_has_no_rule():
    chart = mining_figures.hardness_chart([{"epoch": 1, "mean_gap": 0.1, "active_fraction": 0.3}])
    assert isinstance(chart.hconcat[0], alt.Chart)
    valid(chart)
