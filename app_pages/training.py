"""Training: loss, active fraction, Recall@1 and MAP@R per epoch; held-out pair distances against ε.

Reads ``metrics.jsonl`` and ``val_distances.json`` through :mod:`retrieval.run`; the charts are
:func:`retrieval.figures.training_curves` and :func:`retrieval.figures.distance_histogram`, the
overlap numbers :func:`retrieval.diagnostics.distance_summary`. A run without held-out classes has
no Recall@1 / MAP@R curves and no held-out histogram, and the page says so.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from app_pages.common import chosen_run
from retrieval import diagnostics, figures
from retrieval.run import RunConfig, read_metrics, read_val_distances

VALIDATION_METRICS = ("recall_at_1", "map_at_r")


def training_page(run_dir: Path, config: RunConfig) -> None:
    st.header("Training")
    metrics = read_metrics(run_dir)
    validation = config.has_validation
    if not validation:
        st.caption(":material/info: This run held out no classes (a flat folder, or --val-fraction 0): "
                   "no Recall@1 / MAP@R curves and no held-out distances.")
        metrics = [{key: value for key, value in row.items() if key not in VALIDATION_METRICS} for row in metrics]
    if metrics:
        st.altair_chart(figures.training_curves(metrics), width="content")
        if validation:
            st.caption("Epoch 0 is the untrained model. Recall@1 and MAP@R are measured on the held-out classes"
                       + ("" if config.trained_with_labels else " (their labels are used only to measure, not to train)") + ".")
        else:
            st.caption("Epoch 0 is the untrained model.")
        with st.expander("metrics.jsonl"):
            st.dataframe(metrics, hide_index=True, width="stretch")
    else:
        st.info("This run has no metrics.jsonl: `retrieval train` writes one row per epoch.")

    if validation:
        held_out_distances(run_dir, config.margin)
    with st.expander("config.json"):
        st.json(config.to_dict(), expanded=False)


def held_out_distances(run_dir: Path, margin: float) -> None:
    st.subheader("Held-out distances")
    val = read_val_distances(run_dir)
    if not val or not (val.get("positive") or val.get("negative")):
        st.info("This run has no val_distances.json: it is written after training when classes are held out "
                "(--val-fraction > 0).")
        return
    summary = diagnostics.distance_summary(val, margin)
    st.altair_chart(figures.distance_histogram(val.get("positive") or [], val.get("negative") or [], margin,
                                               median_positive=summary["median_positive"]), width="stretch")
    text = f"{summary['n_positive']} positive and {summary['n_negative']} negative pairs of held-out classes. "
    if summary["threshold"] is not None and summary["negatives_inside"] is not None:
        text += (f"Median positive distance {summary['median_positive']:.3f}; "
                 f"{summary['negatives_inside']:.1%} of negative pairs are nearer than median d_ap + ε = "
                 f"{summary['threshold']:.3f}, i.e. inside the margin for a typical positive.")
    st.caption(text)


if __name__ == "__main__":  # run as a page by st.navigation (which names it __main__), not on import
    training_page(*chosen_run())
