"""Hardest negatives: the batches' hardest triplets epoch by epoch, how hard they were over
training, which classes the model confused while it trained, and which it confuses now.

- The chart: each epoch's logged hardest triplets (of every valid triplet of its batches, not only
  those the miner kept) as points of d_an − d_ap coloured by whether the miner kept them, how many
  lie below 0 (the negative nearer than the positive), inside the margin ε or beyond it, and the
  active, violating and per-anchor fractions of ``metrics.jsonl``.
- Each logged triplet as anchor | positive | negative with d_ap, d_an, the margin violation
  ε − (d_an − d_ap) and whether the miner kept it, filtered by epoch, class, the miner's only, and
  pairs that recur across epochs.
- The class pairs confused most often in the log; the class confusions of training
  (``mining/confusions.jsonl``: which classes held each class's anchors' nearest negatives, ranked
  bars for an epoch and their rate over the epochs); the trained model's confusions in the indexed
  gallery, as pictures (:func:`retrieval.confusions.gallery_confusions`).

A run trained without class labels (``--unlabelled``: view 1 / view 2 / negative; ``--pairs``:
linked groups) has no class filter and none of the class sections, and the page says so. Runs
written before ``mined`` and ``confusions.jsonl`` were recorded say "not recorded". The numbers
come from :mod:`retrieval.diagnostics` and :mod:`retrieval.confusions`, the charts from
:mod:`retrieval.figures`.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import streamlit as st

from app_pages.common import (
    ALL_CLASSES,
    chosen_run,
    index_stamp,
    loss_margin,
    loss_text,
    mining_logs,
    mining_stamp,
    open_index,
    path_key,
    show_image,
    show_item,
)
from app_pages.faces import logged_image
from retrieval import confusions, diagnostics, mining_figures
from retrieval.errors import RetrievalError
from retrieval.index import GalleryIndex
from retrieval.run import RunConfig, read_confusions, read_metrics
from retrieval.safe_text import markdown_text

TRIPLETS_PAGE = 8         # mining triples per page
ROLES = ("anchor", "positive", "negative")
ROLE_TITLES = {"unlabelled": ("view 1", "view 2", "negative")}  # else anchor / positive / negative
CONFUSED_PAIRS_SHOWN = 15
CONFUSION_HISTORY_PAIRS = 5  # pairs whose rate is drawn over the epochs
GALLERY_PAIRS_SHOWN = 6
GALLERY_CONFUSIONS_LIMIT = 10_000  # exact search is N² D: larger galleries are left to `retrieval confusions`
MINED_TEXT = {diagnostics.MINED: ":blue[mined]: the miner kept it", diagnostics.NOT_MINED: ":red[not mined]: the loss never saw it",
              diagnostics.NOT_RECORDED: "mined: not recorded"}
NO_MINER_TEXT = "no miner: the loss saw it, as every triplet of its batch"


def show_logged_image(config: RunConfig, logged: str, run_dir: Path | None) -> None:
    """A logged triplet's image (a face run's crop too: :func:`~app_pages.faces.logged_image`), or a
    caption saying why it is not shown (a file linked from outside the data folder, which the app
    does not read): one such image leaves the rest of the page as it is."""
    try:
        path = logged_image(config, logged, run_dir)
    except RetrievalError as error:
        st.caption(f":material/block: not shown: {markdown_text(Path(logged).name)}", help=markdown_text(str(error)))
        return
    show_image(path)


def mining_page(run_dir: Path, config: RunConfig) -> None:
    st.header("Hardest negatives")
    margin = config.margin
    logs = mining_logs(path_key(run_dir), mining_stamp(run_dir))
    if not logs:
        st.info("This run has no mining log (mining/epoch_NNN.jsonl). `retrieval train` writes the hardest "
                "triplets of each epoch there; a run trained for 0 epochs has none.")
        return
    without_miner = config.miner == "none"  # InfoNCE, NCE, N-pair: the loss takes every pair of a batch
    show_hardness(run_dir, logs, margin, without_miner, config.loss,
                  no_margin_note=None if loss_margin(config) is not None else loss_text(config))

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
    epoch, rows = chosen_triplets(logs, labelled, image_pairs, without_miner)

    n_pages = max(1, math.ceil(len(rows) / TRIPLETS_PAGE))
    st.markdown(f"**{len(rows)}** logged triplets in epoch {epoch}, hardest first "
                f"(violation = ε − (d_an − d_ap); positive: the negative lies inside the margin).")
    page = 1
    if n_pages > 1:
        page = st.columns([1, 3])[0].number_input(f"Page (of {n_pages})", min_value=1, max_value=n_pages, value=1, key="mining_page")
    for number, row in enumerate(rows[(page - 1) * TRIPLETS_PAGE : page * TRIPLETS_PAGE], start=(page - 1) * TRIPLETS_PAGE + 1):
        show_triplet(number, row, config, margin, image_pairs, class_pairs, run_dir)

    if labelled:
        show_confused_classes(logs, class_pairs)
        show_training_confusions(run_dir)
        show_gallery_confusions(run_dir)


def show_hardness(run_dir: Path, logs: dict[int, list[dict]], margin: float, without_miner: bool = False,
                  loss: str | None = None, no_margin_note: str | None = None) -> None:
    """The chart of how hard the logged hardest were, epoch by epoch, and what the last epoch says
    (``without_miner``: the run's loss takes every pair of a batch, so "kept by the miner" is all;
    ``no_margin_note``: the run's loss, which has no margin, so a gap below ε is not a loss of it)."""
    hardness = diagnostics.hardness_by_epoch(logs, read_metrics(run_dir), margin=margin)
    gaps, zones = diagnostics.logged_gaps(logs, margin), diagnostics.gap_zone_counts(logs, margin)
    # each panel in a column of its own, as wide as the column: side by side at fixed widths they ran past
    # the main column of a 1400 px window (measured in Chromium: 1113 px in 1100)
    panels = mining_figures.hardness_panels(hardness, margin, gaps=gaps, zones=zones, margin_loss=no_margin_note is None,
                                     width="container")
    for column, panel in zip(st.columns([1, 1.15, 1.3][-len(panels):]), panels):  # the legends under the last two are wider
        column.altair_chart(panel, width="stretch")
    last = next((r for r in reversed(hardness) if r["n_logged"]), None)
    if last is None:
        return
    if last["n_mined"] is None:
        mined = "whether the miner kept them was not recorded (a run trained before the log said)"
    elif without_miner:
        mined = f"this run has no miner (loss {loss}): its loss saw every triplet of a batch, all {last['n_mined']} of these"
    else:
        mined = f"the miner kept {last['n_mined']}"
    st.caption(f"Last epoch logged ({last['epoch']}; the charts run over every epoch, the Epoch slider below picks the "
               f"triplets listed): of the {last['n_logged']} logged hardest triplets (of all the batches' triplets), "
               f"{last['n_nearer']} have the negative nearer than the positive (d_an − d_ap < 0) and {last['n_violating']} "
               f"have d_an − d_ap < ε = {margin:g}, "
               + ("a loss still" if no_margin_note is None else
                  f"the ε the log measures against (this run's loss is {markdown_text(no_margin_note)})")
               + f"; {mined}. Left: each logged triplet "
               "and their mean; middle: how many lie below 0, inside ε or beyond it; right (metrics.jsonl): the share of "
               + ("mined triplets with a loss, of all triplets inside the margin, " if no_margin_note is None else
                  "mined triplets within ε (each has a loss: the loss has no margin), of all triplets within ε, ")
               + "and of anchors whose nearest negative is nearer than their farthest positive, or within ε of it.")


def chosen_triplets(logs: dict[int, list[dict]], labelled: bool, image_pairs, without_miner: bool = False) -> tuple[int, list[dict]]:
    """The epoch and its logged triplets that the controls (epoch, class, the miner's only, recurring only)
    choose; without a miner the "miner's only" box is off and says why (every triplet is the loss's)."""
    epochs = sorted(logs)
    controls = st.columns([2, 2, 2, 2] if labelled else [2, 2, 2])
    epoch = controls[0].select_slider("Epoch", options=epochs, value=epochs[-1], key="mining_epoch") if len(epochs) > 1 else epochs[0]
    chosen_class = None
    if labelled:
        classes = sorted({str(r[f"{role}_label"]) for rows in logs.values() for r in rows for role in ("anchor", "negative")})
        chosen = controls[1].selectbox("Class", [ALL_CLASSES] + classes, key="mining_class",
                                       help="Triplets whose anchor or negative is of this class.")
        chosen_class = None if chosen == ALL_CLASSES else chosen
    mined_only = controls[-2].checkbox("Only the miner's triplets", key="mining_mined_only", disabled=without_miner,
                                       help="This run has no miner: its loss trained on every triplet of a batch." if without_miner
                                       else "The triplets the miner kept, which the loss trained on.")
    recurring_only = controls[-1].checkbox("Only pairs hard in several epochs", key="mining_recurring")
    rows = diagnostics.select_triplets(logs[epoch], mined_only=mined_only, class_name=chosen_class)
    if recurring_only:
        rows = [r for r in rows if len(image_pairs[(r["anchor_path"], r["negative_path"])]) > 1]
    return epoch, rows


def show_triplet(number: int, row: dict, config: RunConfig, margin: float, image_pairs, class_pairs, run_dir: Path | None = None) -> None:
    violation = margin - float(row["d_an_minus_d_ap"])
    labelled = config.trained_with_labels
    titles = ROLE_TITLES.get(config.mode, ROLES)
    with st.container(border=True, key=f"triplet-{number}"):
        columns = st.columns([1, 1, 1, 2])
        for column, role, title in zip(columns, ROLES, titles):
            with column:
                show_logged_image(config, row[f"{role}_path"], run_dir)
                name = markdown_text(Path(row.get(f"{role}_photo") or row[f"{role}_path"]).name)  # a face crop: its photo
                if labelled:
                    st.markdown(f"{role}: **{markdown_text(row[f'{role}_label'])}**")
                    st.caption(name)
                else:  # the label is a pseudo-label: the image's own path (--unlabelled) or its linked group (--pairs)
                    st.markdown(f"**{title}**")
                    group = "" if config.mode == "unlabelled" else f" · {markdown_text(row[f'{role}_label'])}"
                    st.caption(name + group)
        with columns[3]:
            st.markdown(f"**#{number}** d_ap = {row['d_ap']:.3f} · d_an = {row['d_an']:.3f}  \n"
                        f"d_an − d_ap = {row['d_an_minus_d_ap']:+.4f} · violation **{violation:+.4f}**  \n"
                        f"{NO_MINER_TEXT if config.miner == 'none' else MINED_TEXT[diagnostics.mined_status(row)]}")
            image_epochs = image_pairs.get((row["anchor_path"], row["negative_path"]), [])
            class_epochs = class_pairs.get(diagnostics.class_pair(str(row["anchor_label"]), str(row["negative_label"])), [])
            if len(image_epochs) > 1:
                st.markdown(f":orange[:material/repeat:] this anchor–negative pair was hard in epochs {', '.join(map(str, image_epochs))}")
            if len(class_epochs) > 1:
                st.caption(f"classes {markdown_text(row['anchor_label'])} / {markdown_text(row['negative_label'])} confused in "
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


@st.cache_data(max_entries=4, show_spinner=False)
def training_confusions(run_dir: bytes, stamp: str) -> list[dict] | None:
    """The run's mining/confusions.jsonl rows (``run_dir``: :func:`~app_pages.common.path_key` bytes)."""
    return read_confusions(os.fsdecode(run_dir))


def show_training_confusions(run_dir: Path) -> None:
    """Which classes held each class's anchors' nearest negatives, for a chosen epoch and over training."""
    st.subheader("Class confusions over training")
    rows = training_confusions(path_key(run_dir), mining_stamp(run_dir))
    if rows is None:
        st.info("Not recorded: this run was trained before training wrote mining/confusions.jsonl.")
        return
    epochs = sorted({int(r["epoch"]) for r in rows})
    if not epochs:
        st.info("No anchor met a negative of another class in the logged epochs.")
        return
    epoch = st.select_slider("Epoch", options=epochs, value=epochs[-1], key="confusion_epoch") if len(epochs) > 1 else epochs[0]
    pairs = diagnostics.confused_pairs(rows, epoch, top=CONFUSED_PAIRS_SHOWN)
    history = diagnostics.confusion_history(rows, [(p["anchor_label"], p["negative_label"]) for p in pairs[:CONFUSION_HISTORY_PAIRS]])
    bars_col, history_col = st.columns([1.4, 1]) if len(epochs) > 1 else (st.container(), None)
    bars_col.altair_chart(mining_figures.confusion_chart(pairs, width="container"), width="stretch")
    if history_col is not None:  # a column each: side by side at fixed widths they ran past a 1400 px page
        history_col.altair_chart(mining_figures.confusion_history_chart(history, width="container"), width="stretch")
    st.caption(f"Epoch {epoch}: for each class A (the anchor's), how many of its anchors had their nearest negative "
               "in class B; the colour is the rate, that count over the anchors of A whose batch held a negative of B "
               "(which classes meet depends on the sampler). Right: the rate of the top pairs over the epochs.")


@st.cache_data(max_entries=4, show_spinner="Finding the gallery's confusions…")
def gallery_result(_index: GalleryIndex, stamp: str) -> dict:
    paths = [str(_index.path(item)) for item in range(len(_index))]
    return confusions.gallery_confusions(_index.embeddings, _index.labels, paths, per_class=1, top_pairs=GALLERY_PAIRS_SHOWN)


def show_gallery_confusions(run_dir: Path) -> None:
    """The trained model's most confused class pairs in the indexed gallery, as the closest pair of pictures."""
    st.subheader("What the trained model confuses in the gallery")
    index = open_index(run_dir, "what the model confuses in the gallery")
    if index is None:
        return
    unlabelled = sum(label is None for label in index.labels)
    if unlabelled or len(set(index.labels)) < 2:
        why = ("a flat folder, or one class" if unlabelled in (0, len(index)) else
               f"{unlabelled} of its {len(index)} items have no label, added from a flat folder")
        st.caption(f"The indexed gallery has no classes to confuse ({why}); "
                   f"`retrieval confusions {markdown_text(run_dir)} DATA_DIR` takes a labelled folder.")
        return
    if len(index) > GALLERY_CONFUSIONS_LIMIT:
        st.caption(f"The gallery has {len(index)} items, too many to search every pair here; "
                   f"`retrieval confusions {markdown_text(run_dir)}` does it in the terminal.")
        return
    result = gallery_result(index, index_stamp(run_dir))
    st.caption(f"Exact search over the {result['n_items']} gallery embeddings: the class pairs with the most items whose "
               "nearest neighbour is of the other class (rank 1), then the most items whose nearest other-class item is "
               "there; each shown by its closest pair. The same as `retrieval confusions`.")
    columns = st.columns(3)
    for number, pair in enumerate(result["pairs"]):
        closest = pair["closest"]
        with columns[number % 3].container(border=True, key=f"gallery-confusion-{number}"):
            left, right = st.columns(2)
            for column, path, item, label in ((left, closest["item"], closest["item_index"], closest["label"]),
                                              (right, closest["other"], closest["other_index"], closest["other_label"])):
                with column:
                    show_item(index, item)  # a face gallery: the face
                    st.caption(f"**{markdown_text(label)}** · {markdown_text(Path(path).name)}")
            st.markdown(f"d = {closest['distance']:.3f} · rank-1 confusions **{pair['confused']}** · "
                        f"nearest negatives {pair['nearest_negative']}")


if __name__ == "__main__":  # run as a page by st.navigation (which names it __main__), not on import
    mining_page(*chosen_run())
