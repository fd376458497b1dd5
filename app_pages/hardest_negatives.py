"""Hardest negatives: the mining log epoch by epoch, and how hardness changed over the epochs.

Each logged triplet as anchor | positive | negative with d_ap, d_an and the margin violation
ε − (d_an − d_ap), filtered by class, pairs that recur across epochs marked; the class pairs
confused most often. A run trained without class labels (``--unlabelled``: view 1 / view 2 /
negative; ``--pairs``: linked groups) has no class filter and no class-pair table, and the page
says so. The numbers come from :mod:`retrieval.diagnostics`, the chart from
:func:`retrieval.figures.hardness_chart`.
"""

from __future__ import annotations

import math
from pathlib import Path

import streamlit as st

from app_pages.common import ALL_CLASSES, chosen_run, mining_logs, mining_stamp, show_image
from retrieval import diagnostics, figures
from retrieval.run import RunConfig, read_metrics, resolve_logged_path

TRIPLETS_PAGE = 8         # mining triples per page
ROLES = ("anchor", "positive", "negative")
ROLE_TITLES = {"unlabelled": ("view 1", "view 2", "negative")}  # else anchor / positive / negative
CONFUSED_PAIRS_SHOWN = 15


def mining_page(run_dir: Path, config: RunConfig) -> None:
    st.header("Hardest negatives")
    margin = config.margin
    logs = mining_logs(str(run_dir), mining_stamp(run_dir))
    if not logs:
        st.info("This run has no mining log (mining/epoch_NNN.jsonl). `retrieval train` writes the hardest "
                "mined triplets of each epoch there; a run trained for 0 epochs, or without a miner, has none.")
        return
    hardness = diagnostics.hardness_by_epoch(logs, read_metrics(run_dir), margin=margin)
    st.altair_chart(figures.hardness_chart(hardness, margin), width="content")
    st.caption("Left: mean d_an − d_ap of each epoch's logged hardest triplets; a triplet whose gap is below the "
               "margin ε still has a loss, below 0 its negative is nearer than its positive. Right: the fraction of "
               "all mined triplets with a loss (metrics.jsonl).")

    labelled = config.trained_with_labels
    if config.mode == "unlabelled":
        st.caption(":material/info: Trained without labels (--unlabelled): each triplet is two augmented views of one "
                   "file (view 1, view 2; the pictures show the file itself) and another image of the batch. "
                   "There are no classes, so no class filter and no table of confused class pairs.")
    elif not labelled:
        st.caption(":material/info: Trained without class labels (--pairs): the positive is linked to the anchor through "
                   "the pair file, the negative is an image of another linked group. Groups are not classes, so there "
                   "is no class filter and no table of confused class pairs.")

    image_pairs = diagnostics.pair_history(logs, by="image")
    class_pairs = diagnostics.pair_history(logs, by="class") if labelled else {}
    epoch, rows = chosen_triplets(logs, labelled, image_pairs)

    n_pages = max(1, math.ceil(len(rows) / TRIPLETS_PAGE))
    st.markdown(f"**{len(rows)}** logged triplets in epoch {epoch}, hardest first "
                f"(violation = ε − (d_an − d_ap); positive: the negative lies inside the margin).")
    page = 1
    if n_pages > 1:
        page = st.columns([1, 3])[0].number_input(f"Page (of {n_pages})", min_value=1, max_value=n_pages, value=1, key="mining_page")
    for number, row in enumerate(rows[(page - 1) * TRIPLETS_PAGE : page * TRIPLETS_PAGE], start=(page - 1) * TRIPLETS_PAGE + 1):
        show_triplet(number, row, config, margin, image_pairs, class_pairs)

    if labelled:
        show_confused_classes(logs, class_pairs)


def chosen_triplets(logs: dict[int, list[dict]], labelled: bool, image_pairs) -> tuple[int, list[dict]]:
    """The epoch and its logged triplets that the controls (epoch, class, recurring only) choose."""
    epochs = sorted(logs)
    controls = st.columns([2, 2, 2])
    epoch = controls[0].select_slider("Epoch", options=epochs, value=epochs[-1], key="mining_epoch") if len(epochs) > 1 else epochs[0]
    chosen_class = ALL_CLASSES
    if labelled:
        classes = sorted({str(r[f"{role}_label"]) for rows in logs.values() for r in rows for role in ("anchor", "negative")})
        chosen_class = controls[1].selectbox("Class", [ALL_CLASSES] + classes, key="mining_class",
                                             help="Triplets whose anchor or negative is of this class.")
    recurring_only = controls[2 if labelled else 1].checkbox("Only pairs hard in several epochs", key="mining_recurring")
    rows = [r for r in logs[epoch]
            if chosen_class == ALL_CLASSES or chosen_class in (str(r["anchor_label"]), str(r["negative_label"]))]
    if recurring_only:
        rows = [r for r in rows if len(image_pairs[(r["anchor_path"], r["negative_path"])]) > 1]
    return epoch, rows


def show_triplet(number: int, row: dict, config: RunConfig, margin: float, image_pairs, class_pairs) -> None:
    violation = margin - float(row["d_an_minus_d_ap"])
    labelled = config.trained_with_labels
    titles = ROLE_TITLES.get(config.mode, ROLES)
    with st.container(border=True, key=f"triplet-{number}"):
        columns = st.columns([1, 1, 1, 2])
        for column, role, title in zip(columns, ROLES, titles):
            with column:
                show_image(resolve_logged_path(config, row[f"{role}_path"]))
                name = Path(row[f"{role}_path"]).name
                if labelled:
                    st.markdown(f"{role}: **{row[f'{role}_label']}**")
                    st.caption(name)
                else:  # the label is a pseudo-label: the image's own path (--unlabelled) or its linked group (--pairs)
                    st.markdown(f"**{title}**")
                    group = "" if config.mode == "unlabelled" else f" · {row[f'{role}_label']}"
                    st.caption(name + group)
        with columns[3]:
            st.markdown(f"**#{number}** d_ap = {row['d_ap']:.3f} · d_an = {row['d_an']:.3f}  \n"
                        f"d_an − d_ap = {row['d_an_minus_d_ap']:+.4f} · violation **{violation:+.4f}**")
            image_epochs = image_pairs.get((row["anchor_path"], row["negative_path"]), [])
            class_epochs = class_pairs.get(diagnostics.class_pair(str(row["anchor_label"]), str(row["negative_label"])), [])
            if len(image_epochs) > 1:
                st.markdown(f":orange[:material/repeat:] this anchor–negative pair was hard in epochs {', '.join(map(str, image_epochs))}")
            if len(class_epochs) > 1:
                st.caption(f"classes {row['anchor_label']} / {row['negative_label']} confused in "
                           f"{len(class_epochs)} epochs: {', '.join(map(str, class_epochs))}")


def show_confused_classes(logs: dict[int, list[dict]], class_pairs) -> None:
    """The class pairs hard in the most epochs, with how many triplets and how hard."""
    st.subheader("Class pairs confused most often")
    confused = sorted(class_pairs.items(), key=lambda kv: (-len(kv[1]), kv[0]))[:CONFUSED_PAIRS_SHOWN]
    gaps: dict[tuple[str, str], list[float]] = {}
    for rows_of_epoch in logs.values():
        for r in rows_of_epoch:
            gaps.setdefault(diagnostics.class_pair(str(r["anchor_label"]), str(r["negative_label"])), []).append(float(r["d_an_minus_d_ap"]))
    st.dataframe(
        [{"class A": a, "class B": b, "epochs hard": len(e), "in epochs": ", ".join(map(str, e)),
          "triplets logged": len(gaps[(a, b)]), "mean d_an − d_ap": round(sum(gaps[(a, b)]) / len(gaps[(a, b)]), 4)}
         for (a, b), e in confused],
        hide_index=True, width="stretch",
    )


if __name__ == "__main__":  # run as a page by st.navigation (which names it __main__), not on import
    mining_page(*chosen_run())
