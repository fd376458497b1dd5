"""Training: loss, active fraction, Recall@1, MAP@R and EER per epoch; held-out pair distances
against ε and the threshold τ, with the ROC / DET curve beside them.

Reads ``metrics.jsonl``, ``val_distances.json`` and ``config.json``'s ``"verification"`` through
:mod:`retrieval.run`; the charts are :func:`retrieval.figures.training_curves`,
:func:`~retrieval.figures.distance_histogram` and :func:`~retrieval.figures.roc_chart`, the
numbers :func:`retrieval.diagnostics.distance_summary` and :mod:`retrieval.verification`. The
ROC is drawn from the sampled distances of ``val_distances.json`` (the best epoch's: the weights that
Search and Verify use; runs trained before that hold their last epoch's, and the page says which); the stored τ is
marked where it falls on them, and a control tries another target FAR on the same pairs: shown,
never written (the app only reads run directories; ``retrieval calibrate`` stores a new τ). A run
without held-out classes has no Recall@1 / MAP@R / EER curves and no held-out histogram, and the
page says so, and whether a τ was calibrated.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from app_pages.common import chosen_run, loss_margin, loss_text
from app_pages.search import too_few_pairs
from retrieval import diagnostics, figures
from retrieval.run import RunConfig, read_metrics, read_val_distances
from retrieval.safe_text import markdown_text, printable
from retrieval.verification import NoThresholdError, pairs_needed, percent, rates_at, roc_points, threshold_at_far

VALIDATION_METRICS = ("recall_at_1", "map_at_r", "eer", "tar_at_far", "threshold")
#: the target FARs the page lets a user try
TRY_FARS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2)


def training_page(run_dir: Path, config: RunConfig) -> None:
    st.header("Training")
    metrics = read_metrics(run_dir)
    validation = config.has_validation
    if not validation:
        st.caption(":material/info: This run held out no classes (a flat folder, or --val-fraction 0): "
                   "no Recall@1 / MAP@R / EER curves and no held-out distances.")
        metrics = [{key: value for key, value in row.items() if key not in VALIDATION_METRICS} for row in metrics]
    if metrics:
        st.altair_chart(figures.training_curves(metrics, margin_loss=loss_margin(config) is not None), width="content")
        if validation:
            st.caption("Epoch 0 is the untrained model. Recall@1, MAP@R and the EER are measured on the held-out classes"
                       + ("" if config.trained_with_labels else " (their labels are used only to measure, not to train)") + ".")
        else:
            st.caption("Epoch 0 is the untrained model.")
        with st.expander("metrics.jsonl"):
            st.dataframe(metrics, hide_index=True, width="stretch")
    else:
        st.info("This run has no metrics.jsonl: `retrieval train` writes one row per epoch.")

    if validation:
        held_out_distances(run_dir, config)
    else:
        st.caption(threshold_line(run_dir, config))
    with st.expander("config.json"):
        st.json(config.to_dict(), expanded=False)


def held_out_distances(run_dir: Path, config: RunConfig) -> None:
    st.subheader("Held-out distances")
    val = read_val_distances(run_dir)
    if not val or not (val.get("positive") or val.get("negative")):
        st.info("This run has no val_distances.json: it is written after training when classes are held out "
                "(--val-fraction > 0).")
        st.caption(threshold_line(run_dir, config))
        return
    positive, negative = val.get("positive") or [], val.get("negative") or []
    margin, threshold = config.margin, config.threshold
    summary = diagnostics.distance_summary(val, margin)
    histogram = figures.distance_histogram(positive, negative, margin, median_positive=summary["median_positive"],
                                           threshold=None if threshold is None else threshold.threshold)
    if positive and negative:
        kind = st.radio("Curve", ["ROC", "DET"], horizontal=True, key="roc_kind",
                        help="ROC: TAR against FAR. DET: FRR against FAR, both on log axes (errors only).")
        tried = try_target_far(positive, negative, threshold)
        chosen = chosen_points(positive, negative, threshold, tried)
        curve = figures.roc_chart(roc_points(positive, negative), kind=kind.lower(), chosen=chosen)
        # each its own colours: a shared scale merged the curve's dots into the histogram's pair colours, hiding them
        st.altair_chart((histogram.properties(width=420) | curve.properties(width=360)).resolve_scale(color="independent"),
                        width="content")
    else:
        tried = None
        st.altair_chart(histogram, width="stretch")
    epoch = distances_epoch(val.get("epoch"), config.get("best_epoch"))
    text = f"{summary['n_positive']} positive and {summary['n_negative']} negative pairs of held-out classes{epoch}, sampled. "
    if summary["threshold"] is not None and summary["negatives_inside"] is not None:
        text += (f"Median positive distance {summary['median_positive']:.3f}; "
                 f"{summary['negatives_inside']:.1%} of negative pairs are nearer than median d_ap + ε = "
                 f"{summary['threshold']:.3f}, i.e. inside the margin for a typical positive."
                 + ("" if loss_margin(config) is not None else
                    f" This run's loss is {markdown_text(loss_text(config))}; ε is only a yardstick here."))
    st.caption(text)
    st.caption(threshold_line(run_dir, config))
    if tried is not None:
        st.caption(tried_line(tried, len(negative), run_dir))


def distances_epoch(epoch: int | None, best_epoch: int | None) -> str:
    """" (epoch E, the weights served)" after the pair count: the distances are the best epoch's, the
    weights Search and Verify use; a run trained before they followed the best weights holds its last
    epoch's, and when that is not the best the page says so."""
    if epoch is None:
        return ""
    if best_epoch is None or epoch == best_epoch:
        return f" (epoch {epoch}" + ("" if best_epoch is None else ", the weights served") + ")"
    return (f" (epoch {epoch}, the last; the weights served and their τ are epoch {best_epoch}'s: this run was "
            "trained before the distances followed the best weights)")


def try_target_far(positive, negative, threshold):
    """The control that tries another target FAR on the shown pairs: the τ it would give (never saved)."""
    default = threshold.target_far if threshold is not None and threshold.target_far in TRY_FARS else 0.01
    far = st.select_slider("Try another target FAR (shown here, never saved)", options=TRY_FARS, value=default,
                           format_func=percent, key="try_far")
    try:
        return threshold_at_far(positive, negative, far)
    except NoThresholdError as error:  # identical images under two classes: no τ ≥ 0 meets this FAR
        st.caption(f"At a target FAR of {percent(far)}: {markdown_text(str(error))}.")
        return None


def chosen_points(positive, negative, threshold, tried) -> list[dict]:
    """The stored τ where it falls on the shown pairs, and the tried target FAR's τ, for the ROC chart
    (not when it is the stored τ again: the slider starts at the stored target FAR)."""
    points = []
    if threshold is not None:
        far, frr = rates_at(threshold.threshold, positive, negative)
        points.append({"name": f"stored τ (FAR {percent(threshold.target_far)})", "far": far, "tar": 1.0 - frr,
                       "threshold": threshold.threshold})
    same_as_stored = (tried is None or threshold is not None and tried.target_far == threshold.target_far
                      and abs(tried.threshold - threshold.threshold) < 5e-4)
    if not same_as_stored:  # the same point twice would print two labels on top of each other
        points.append({"name": f"tried: FAR {percent(tried.target_far)}", "far": tried.far, "tar": tried.tar,
                       "threshold": tried.threshold})
    return points


def threshold_line(run_dir: Path, config: RunConfig) -> str:
    """Where the run's τ comes from and what it gave there, or how to set one."""
    stored = config.verification
    if stored is None:
        return (":material/info: No threshold τ is set for this run, so Search and Verify give distances without a "
                f"verdict. Set one with retrieval calibrate {markdown_text(run_dir)} DATA_DIR --target-far 0.01 "
                "on a labelled folder of classes the model did not train on.")
    return (f"Stored threshold τ = {stored['threshold']:.3f} (target FAR {percent(stored['target_far'])}): FAR "
            f"{percent(stored['far'])}, TAR {percent(stored['tar'])}"
            + ("" if stored.get("eer") is None else f", EER {percent(stored['eer'])}")
            + f" on {stored['n_positive_pairs']} same-class and {stored['n_negative_pairs']} different-class pairs ("
            f"{markdown_text(stored.get('pairs', 'pairs not recorded'))}). The dot on the curve is where it falls on the "
            "sampled pairs shown (at the left edge where its FAR there is 0, which the log axis cannot show)." + too_few_pairs(stored))


def tried_line(tried, n_negative: int, run_dir: Path) -> str:
    """What the tried target FAR gives on the shown pairs, and how to store it."""
    text = (f"At a target FAR of {percent(tried.target_far)} these pairs give τ = {tried.threshold:.3f}: FAR "
            f"{percent(tried.far)}, TAR {percent(tried.tar)}. Shown only; to store a threshold, run "
            f"`retrieval calibrate {printable(run_dir)} DATA_DIR --target-far {tried.target_far:g}`.")
    needed = pairs_needed(tried.target_far)
    if n_negative < needed:
        text += f" With {n_negative} negative pairs shown, a FAR of {percent(tried.target_far)} rests on too few (≥ {needed} needed)."
    return text


if __name__ == "__main__":  # run as a page by st.navigation (which names it __main__), not on import
    training_page(*chosen_run())
