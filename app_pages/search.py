"""Search: upload a query image or pick one from the gallery and see why it gets the neighbours it gets.

Above them the open-set verdict at the run's threshold τ (:meth:`~retrieval.index.GalleryIndex.verdict`:
"match: LABEL, d = 0.31 ≤ τ = 0.52 at FAR 1 %" or "no match in the gallery"; without τ, how to set
one). Its top-K neighbours with label, distance and cosine similarity; the margin picture (distances as
bars, the training margin ε as a band above the nearest distance, τ as a rule); with the query's label, its
nearest positive and negative and whether their gap clears ε. A run whose loss has no margin (InfoNCE,
NCE, N-pair: :func:`~app_pages.common.loss_margin`) gets no band and no ε to clear, and the page says so.
A gallery without class labels (a flat folder), or with some items without (``index --add`` of a flat
folder), has no class filter and no nearest positive / negative check, and the page says so; a gallery of one image picked as the query has nothing to compare it with.
The numbers come from :func:`retrieval.diagnostics.explain_search`, the chart from
:func:`retrieval.figures.margin_spec`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
import time
from pathlib import Path

import streamlit as st

from app_pages.common import (
    ALL_CLASSES,
    chosen_run,
    class_items,
    embed_upload,
    index_stamp,
    item_name,
    known_class_picker,
    neighbour_distance,
    loss_margin,
    open_index,
    relation_mark,
    show_item,
    upload_refusal,
)
from retrieval import diagnostics, figures
from retrieval.data import IMAGE_EXTENSIONS, MAX_QUERY_PIXELS
from retrieval.errors import RetrievalError
from retrieval.index import GalleryIndex
from retrieval.run import RunConfig
from retrieval.safe_text import markdown_text, printable
from retrieval.verification import Threshold, pairs_needed, percent

GRID_COLUMNS = 5          # neighbours per row
PICKER_PAGE = 12          # gallery thumbnails per page in the picker
PICKER_COLUMNS = 6        # of them in a row, across the page
MODE_NOTES = {"unlabelled": "trained with --unlabelled (each image its own class, seen as two augmented views)",
              "pairs": "trained with --pairs (images linked by the pair file form the classes)"}


def search_page(run_dir: Path, config: RunConfig) -> None:
    started = time.perf_counter()
    timings: dict[str, float] = {}
    st.header("Search the gallery")
    index = open_index(run_dir, "search")
    if index is None:
        return
    stamp = index_stamp(run_dir)
    margin = loss_margin(config)  # None: the run's loss has no margin
    n_unlabelled = sum(label is None for label in index.labels)
    # class checks need every item labelled (as `retrieval index --add` of a flat folder warns): a partly
    # labelled gallery would count an unlabelled neighbour of the query's own class as neither ✓ nor ✗
    labels = sorted({label for label in index.labels if label is not None}) if not n_unlabelled else []

    top = st.columns([3, 1])
    source = top[0].radio("Query", ["Upload an image", "Pick from the gallery"], horizontal=True, key="query_source")
    k = top[1].number_input("Neighbours (K)", min_value=1, max_value=min(100, len(index)), value=min(10, len(index)), key="k")
    if n_unlabelled == len(index):
        st.caption(":material/info: This gallery has no class labels (a flat folder), so there is no class filter and "
                   "no nearest positive / negative check; the neighbours, their distances and the margin picture are shown.")
    elif n_unlabelled:
        st.caption(f":material/info: {n_unlabelled} of the gallery's {len(index)} {'faces' if index.has_faces else 'images'} "
                   "have no class label (added from a flat folder), so there is no class filter and no ✓ / ✗ or nearest "
                   "positive / negative check; the neighbours, their distances and the margin picture are shown.")

    if index.has_faces and source == "Upload an image":  # a face run: every face of the photo is searched (app_pages/faces.py)
        from app_pages.faces import face_search_section

        def explain(picked) -> None:  # the picked face, as an uploaded image is explained below
            explanation = diagnostics.explain_search(index, picked.result.vector, int(k), margin=margin or 0.0,
                                                     query_label=picked.label)
            st.session_state["last_query"] = {"stamp": stamp, "vector": explanation.vector, "name": picked.name}
            show_margin(index, explanation, picked.label, margin, gallery_labelled=bool(labels), config=config,
                        threshold=index.threshold, title=f"Margin picture: {markdown_text(picked.name)}")

        with timed(timings, "faces"):
            searched = face_search_section(index, run_dir, stamp, int(k), labels, explain)
        if searched:  # not after a refused upload or a photo without a face: nothing was searched
            if index.threshold is not None:
                st.caption(threshold_note(config) + " A neighbour is a match when d ≤ τ.")
            st.caption(f"Server time {1000 * (time.perf_counter() - started):.0f} ms (detect, align, embed and search every face).")
        return
    picked = None if source == "Upload an image" else gallery_picker(index, stamp, labels)  # the page's width: readable names
    query_col, result_col = st.columns([1, 3], gap="large")
    with query_col, timed(timings, "query"):
        if source == "Upload an image":
            query = upload_query(index, stamp, labels)
        else:
            query = gallery_query(index, picked, labels)
    if query is None:
        return
    vector_or_image, query_name, query_label, exclude = query

    with timed(timings, "search"):
        explanation = diagnostics.explain_search(index, vector_or_image, int(k), margin=margin or 0.0,
                                                 query_label=query_label, exclude_item=exclude)
    st.session_state["last_query"] = {"stamp": stamp, "vector": explanation.vector, "name": query_name}
    if not explanation.neighbours:  # a gallery of one image, picked as the query and left out
        result_col.info(f"The gallery holds no other {'face' if index.has_faces else 'image'} than the query, so there is "
                        "nothing to compare it with: no neighbours, no margin picture and no verdict. Index a folder of "
                        "more images to search it.")
        return
    with result_col, timed(timings, "neighbours"):
        show_verdict(index, explanation, run_dir, config)
        show_neighbours(index, explanation, query_label, margin)
    with timed(timings, "margin picture"):
        show_margin(index, explanation, query_label, margin, gallery_labelled=bool(labels), config=config, threshold=index.threshold)
    total = time.perf_counter() - started
    st.caption(f"Server time {1000 * total:.0f} ms: " + ", ".join(f"{name} {1000 * seconds:.0f} ms" for name, seconds in timings.items())
               + " (query = decode + embed, skipped for an image already seen).")


@contextlib.contextmanager
def timed(timings: dict[str, float], name: str):
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - start


# ----------------------------------------------------------------------------- the query


def upload_query(index: GalleryIndex, stamp: str, labels: list[str]):
    """(embedding, name, label or None, None) of an uploaded image, or None (nothing uploaded, unreadable)."""
    types = sorted(ext.lstrip(".") for ext in IMAGE_EXTENSIONS)
    uploaded = st.file_uploader("Query image", type=types, key="upload",
                                help=f"JPEG, PNG, WebP, BMP, GIF, TIFF, PGM/PPM; at most {MAX_QUERY_PIXELS / 1e6:g} "
                                f"megapixels and {st.get_option('server.maxUploadSize')} MB.")
    if uploaded is None:
        st.info("Upload an image to see its nearest gallery images.")
        return None
    data = uploaded.getvalue()
    try:
        digest = hashlib.sha1(data).hexdigest()  # the upload's key: its embedding's cache, and its class box
        vector, preview = embed_upload(index, stamp, digest, data, uploaded.name)
    except RetrievalError as error:
        st.error(upload_refusal(error))
        return None
    st.image(preview, caption=markdown_text(uploaded.name), width="stretch")
    label = None
    if labels:
        label = known_class_picker(labels, ("upload", digest),
                                   help="Type to filter. With a class, the page shows the nearest positive and negative.")
    return vector, uploaded.name, label, None


def gallery_picker(index: GalleryIndex, stamp: str, labels: list[str]) -> int | None:
    """The gallery image picked as the query (None until one is): a class filter and, in an expander
    across the page, the gallery a page at a time, each a picture and a "class · file" button."""
    by_label = class_items(index, stamp)
    items = list(range(len(index)))
    if labels:
        chosen = st.selectbox("Class", [ALL_CLASSES] + labels, key="pick_class")
        items = items if chosen == ALL_CLASSES else by_label.get(chosen, [])
    picked = st.session_state.get("picked")
    if picked is not None and (picked.get("stamp") != stamp or picked.get("item", len(index)) >= len(index)):
        picked = None
    n_pages = max(1, math.ceil(len(items) / PICKER_PAGE))
    with st.expander("Gallery (pick a query)", expanded=picked is None):
        page = st.columns([1, 4])[0].number_input(f"Page (of {n_pages})", min_value=1, max_value=n_pages, value=1,
                                                  key="pick_page") if n_pages > 1 else 1
        shown = items[(page - 1) * PICKER_PAGE : page * PICKER_PAGE]
        for start in range(0, len(shown), PICKER_COLUMNS):  # a row of columns each: the pictures line up
            for column, item in zip(st.columns(PICKER_COLUMNS), shown[start : start + PICKER_COLUMNS]):
                with column:
                    show_item(index, item)
                    label = index.labels[item]  # many galleries repeat file names across classes (s31/1.png, s32/1.png)
                    name = item_name(index, item) if label is None else f"{label} · {item_name(index, item)}"
                    st.caption(markdown_text(name))  # wraps: a button's label was cut to "bottle-blue-star ·…"
                    if st.button("pick", key=f"pick-{item}", width="stretch",
                                 help=markdown_text(printable(index.relative_paths[item]))):
                        st.session_state["picked"] = {"stamp": stamp, "item": item}
                        st.rerun()
        st.caption(f"{len(items)} {'faces' if index.has_faces else 'images'}; page {page} of {n_pages}")
    if picked is None:
        st.info("Pick a gallery image as the query.")
        return None
    return int(picked["item"])


def gallery_query(index: GalleryIndex, item: int | None, labels: list[str]):
    """(embedding, name, label, item) of the gallery image picked as the query, shown (left out of
    its own results), or None until one is picked."""
    if item is None:
        return None
    show_item(index, item, caption=f"query: {markdown_text(item_name(index, item))}")
    label = index.labels[item]
    st.caption(("" if label is None else f"class {markdown_text(label)} · ") + "the query itself is left out of the results")
    if index.has_faces:
        from app_pages.faces import photo_button

        photo_button(index, item, key="photo-query", detail="The query")
    vector = index.embeddings[item]
    return vector, item_name(index, item), label if labels else None, item  # no class check unless all labelled


# ----------------------------------------------------------------------------- the answer


def show_verdict(index: GalleryIndex, explanation: diagnostics.SearchExplanation, run_dir: Path, config: RunConfig) -> None:
    """The open-set verdict above the neighbours: the nearest item's label when it lies within the
    run's threshold τ, else "no match in the gallery"; without τ, how to set one."""
    threshold = index.threshold
    if threshold is None:
        show_no_threshold(run_dir)
        return
    verdict = index.verdict(explanation.neighbours)
    shown = dataclasses.replace(verdict, label=None if verdict.label is None else markdown_text(verdict.label))
    nearest = markdown_text(item_name(index, explanation.neighbours[0].item)) if explanation.neighbours else None
    icon = ":green[:material/check_circle:]" if verdict.match else ":orange[:material/person_off:]"
    with st.container(border=True, key="verdict"):
        st.markdown(f"{icon} **{shown.describe(threshold.target_far, nearest=nearest)}**")
        st.caption(threshold_note(config) + " A neighbour is a match when d ≤ τ.")


def show_no_threshold(run_dir: Path) -> None:
    """What a run without a threshold τ gets instead of a verdict: why, and the command that sets one."""
    st.info("No threshold τ is set for this run, so there is no match / no-match verdict, only distances. "
            "Training sets one when it holds out validation classes; for this run, choose one on a labelled folder "
            "of classes the model did not train on:")
    st.code(f"retrieval calibrate {printable(run_dir)} DATA_DIR --target-far 0.01", language="bash")


def threshold_note(config: RunConfig) -> str:
    """One caption line on where the run's τ comes from and what it gave there (and when its pairs
    are too few to measure its target FAR)."""
    stored = config.verification or {}
    where = markdown_text(stored.get("pairs", "pairs not recorded"))
    return (f"τ = {stored['threshold']:.3f} was chosen at a target FAR of {percent(stored['target_far'])} on {where}: "
            f"FAR {percent(stored['far'])}, TAR {percent(stored['tar'])} on {stored['n_positive_pairs']} same-class and "
            f"{stored['n_negative_pairs']} different-class pairs." + too_few_pairs(stored))


def too_few_pairs(stored) -> str:
    """" Too few …" when a stored τ's different-class pairs cannot measure its target FAR (10 / FAR
    needed), with the way to a better one; else ""."""
    needed = pairs_needed(stored["target_far"])
    if stored["n_negative_pairs"] >= needed:
        return ""
    return (f" :orange[Too few different-class pairs to measure a FAR of {percent(stored['target_far'])} "
            f"(≥ {needed} needed): these rates are rough; `retrieval calibrate` on a folder of more classes gives a firmer τ.]")


def show_neighbours(index: GalleryIndex, explanation: diagnostics.SearchExplanation, query_label: str | None,
                    margin: float | None) -> None:
    """The neighbours as cards; with a ``margin`` (None: the run's loss has none), ◆ marks those within it of the best match."""
    neighbours = explanation.neighbours
    band_low, band_high = explanation.band or (0.0, 0.0)
    st.subheader(f"Top {len(neighbours)} neighbours")
    if margin is None:
        st.caption("d: distance between unit embeddings (0 to 2); cos: cosine similarity = 1 − d²/2. "
                   "≤ τ marks a neighbour within the run's threshold (a match).")
    else:
        st.caption("d: distance between unit embeddings (0 to 2, the units of the training margin); "
                   "cos: cosine similarity = 1 − d²/2. ◆ marks a neighbour within the margin of the best match, "
                   "≤ τ one within the run's threshold (a match).")
    for start in range(0, len(neighbours), GRID_COLUMNS):
        columns = st.columns(GRID_COLUMNS)
        for column, (rank, n) in zip(columns, enumerate(neighbours[start : start + GRID_COLUMNS], start=start + 1)):
            with column, st.container(border=True, key=f"neighbour-{rank}"):
                show_item(index, n.item)
                mark = "◆ " if margin is not None and n.distance <= band_high else ""
                st.markdown(f"**{rank}. {markdown_text(n.label if n.label is not None else item_name(index, n.item))}**"
                            f"{relation_mark(n.label, query_label)}  \n"
                            f"{mark}{neighbour_distance(index, n.distance, n.match)}  \n"
                            f"cos = {n.similarity:.3f}")
                if n.label is not None:  # without a label the file name is the card's title already
                    st.caption(markdown_text(item_name(index, n.item)))
                if index.has_faces:  # a face gallery: the photo the face was found in, a click away
                    from app_pages.faces import photo_button

                    photo_button(index, n.item, key=f"photo-{rank}", detail=f"Neighbour {rank} of the query: d = {n.distance:.3f}")


def show_margin(index: GalleryIndex, explanation: diagnostics.SearchExplanation, query_label: str | None,
                margin: float | None, *, gallery_labelled: bool = True, config: RunConfig | None = None,
                threshold: Threshold | None = None, title: str = "Margin picture") -> None:
    """The margin picture and, with the query's label, its nearest positive and negative; ``margin``
    None (the run's loss has none): the distances without a band."""
    st.subheader(title)
    if not explanation.neighbours:
        return
    low, high = explanation.band
    chart_col, text_col = st.columns([3, 1], gap="large")
    with chart_col:
        st.vega_lite_chart(figures.margin_spec(chart_neighbours(explanation.neighbours), margin, query_label=query_label,
                                               threshold=None if threshold is None else threshold.threshold,
                                               target_far=None if threshold is None else threshold.target_far), width="stretch")
    with text_col:
        if margin is None:
            loss = "" if config is None else f", {markdown_text(config.get('loss', '?'))},"
            explained = (f"The bars are the neighbours' distances, from the nearest, **{low:.3f}**. This run's loss{loss} "
                         "asked for no margin between a match and a non-match (it ranks each match above the other "
                         "images of its batch), so no band is drawn.")
        else:
            explained = (f"The band runs from the nearest distance **{low:.3f}** to **{high:.3f}** (+ margin ε = {margin:g}). "
                         f"**{explanation.within_margin} of {len(explanation.neighbours)}** neighbours lie inside it: training "
                         "asked for a margin of ε between a match and a non-match, so items in the band are not separated "
                         "from the best match by that margin.")
        st.markdown(explained + ("" if threshold is None else f" The green rule is the threshold τ = {threshold.threshold:.3f}: "
                                 "a neighbour whose bar ends below it is a match."))
    report = explanation.report
    if report is None:
        if gallery_labelled:
            st.caption("Give the query's class (or pick a gallery image) to see its nearest positive and negative.")
        return
    st.subheader("Nearest positive and nearest negative")
    if config is not None and not config.trained_with_labels:
        st.caption(f"The classes are the gallery's folders; this run was {MODE_NOTES.get(config.mode, '')}, "
                   "so they did not guide training.")
    show_positive_and_negative(index, report, margin)


def chart_neighbours(neighbours: list) -> list:
    """The neighbours as the margin chart names them: each path :func:`~retrieval.safe_text.printable` (the chart's
    data is sent as Arrow, whose text must be UTF-8: a file name that is not could not be sent)."""
    return [dataclasses.replace(n, path=printable(n.path)) for n in neighbours]


def show_positive_and_negative(index: GalleryIndex, report: diagnostics.MarginReport, margin: float | None) -> None:
    """The nearest positive and negative, and how their gap d_an − d_ap stands to the margin ε (``margin``
    None: the run's loss has none, so only whether the positive is the nearer)."""
    pos_col, neg_col, verdict_col = st.columns([1, 1, 2], gap="large")
    with pos_col:
        if report.positive is None:
            st.info(f"No other gallery image of class {markdown_text(report.query_label)}.")
        else:
            show_item(index, report.positive.item)
            st.markdown(f"positive: **{markdown_text(report.positive.label)}**  \nd_ap = {report.positive.distance:.3f}")
    with neg_col:
        if report.negative is None:
            st.info("No gallery image of another class.")
        else:
            show_item(index, report.negative.item)
            st.markdown(f"negative: **{markdown_text(report.negative.label)}**  \nd_an = {report.negative.distance:.3f}")
    with verdict_col:
        if report.gap is None:
            st.info("Both a positive and a negative are needed to compare against the margin."
                    if margin is not None else "Both a positive and a negative are needed to compare them.")
        elif margin is None and report.gap >= 0:
            st.success(f"The positive is the nearer: d_an − d_ap = {report.gap:.3f} ≥ 0. This run's loss has no margin, "
                       "so there is no ε to clear.")
        elif margin is None:
            st.error(f"The negative is nearer than the positive: d_an − d_ap = {report.gap:.3f}; the top match is of the wrong class.")
        elif report.clears_margin:
            st.success(f"Clears the margin: d_an − d_ap = {report.gap:.3f} ≥ ε = {margin:g}.")
        elif report.gap >= 0:
            st.warning(f"Inside the margin: d_an − d_ap = {report.gap:.3f} < ε = {margin:g} "
                       f"(violation {report.violation:.3f}); the positive still ranks first, but a triplet "
                       "loss would still push these apart.")
        else:
            st.error(f"The negative is nearer than the positive: d_an − d_ap = {report.gap:.3f} "
                     f"(violation {report.violation:.3f}); the top match is of the wrong class.")


if __name__ == "__main__":  # run as a page by st.navigation (which names it __main__), not on import
    search_page(*chosen_run())
