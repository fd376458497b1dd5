"""The Streamlit front end: look inside a run directory, never train.

Start it with ``retrieval app RUN_DIR`` or ``streamlit run streamlit_app.py -- RUN_DIR``. The run
directory comes from the command line, else the ``RETRIEVAL_RUN_DIR`` environment variable, else
the user picks one of the runs under ``models/`` in the sidebar.

Pages (sidebar):

- Search: upload a query image or pick one from the gallery; its top-K neighbours with label,
  distance and cosine similarity; the margin picture (distances as bars, the training margin ε as a
  band above the nearest distance); with the query's label, its nearest positive and negative and
  whether their gap clears ε.
- Hardest negatives: the mining log epoch by epoch as anchor | positive | negative triples with
  d_ap, d_an and the margin violation, filtered by class, pairs that recur across epochs marked;
  how hardness changed over the epochs.
- Embedding map: the gallery embeddings projected to 2-D (PCA, or UMAP when installed), coloured
  by class, the last query on it.
- Training: loss, active fraction, Recall@1, MAP@R per epoch; held-out positive- and
  negative-pair distances against the margin.

Runs trained without class labels (``retrieval train --unlabelled`` / ``--pairs FILE``; config.json
``"mode"``, ``"labelled"``, ``"has_validation"``) and flat galleries (index labels None) get the
same pages less what needs labels: the Search page has no class filter and no nearest positive /
negative verdict when the gallery has no labels; the Hardest negatives page has no class filter
and no class-pair table when training had no labels (unlabelled-mode triplets are shown as view 1 /
view 2 / negative); the map is coloured by folder or not at all for a gallery without labels; a
run without held-out classes has no Recall@1 / MAP@R curves and no held-out histogram. Each page
says so in one line.

All numbers come from the library (:mod:`retrieval.runs`, :mod:`retrieval.index`,
:mod:`retrieval.diagnostics`) and all charts from :mod:`retrieval.figures`; this file only lays
them out. The model and index are loaded once per run (``st.cache_resource``).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
import os
import sys
import time
from pathlib import Path

import streamlit as st

from retrieval import diagnostics, figures, runs
from retrieval.data import IMAGE_EXTENSIONS, load_image, load_image_bytes
from retrieval.errors import RetrievalError
from retrieval.index import INDEX_DIR, METADATA_NAME, GalleryIndex, index_exists
from retrieval.models import CONFIG_NAME, WEIGHTS_NAME, read_config

APP_FILE = Path(__file__).resolve()
RUN_DIR_ENV = "RETRIEVAL_RUN_DIR"
PAGES = ("Search", "Hardest negatives", "Embedding map", "Training")
GRID_COLUMNS = 5          # neighbours per row
PICKER_PAGE = 12          # gallery thumbnails per page in the picker
TRIPLETS_PAGE = 8         # mining triples per page
THUMBNAIL_PX = 256
UNKNOWN = "(unknown)"
ALL_CLASSES = "(all classes)"
VALIDATION_METRICS = ("recall_at_1", "map_at_r")
ROLE_TITLES = {"unlabelled": ("view 1", "view 2", "negative")}  # else anchor / positive / negative
NO_LABEL_VALUES = ("", "-1")  # gallery labels that mean "no label" (besides None)


# ----------------------------------------------------------------------------- what the run knows


def training_mode(config: dict) -> str:
    """"labelled", "unlabelled" or "pairs" (config.json "mode"; runs from before the modes are labelled)."""
    mode = config.get("mode")
    if mode in ("labelled", "unlabelled", "pairs"):
        return mode
    return "labelled" if config.get("labelled", True) is not False else "unlabelled"


def trained_with_labels(config: dict) -> bool:
    return training_mode(config) == "labelled" and config.get("labelled", True) is not False


def has_validation(config: dict) -> bool:
    """Whether the run held out classes to measure Recall@1 / MAP@R on (older runs: assumed)."""
    return config.get("has_validation", True) is not False


def gallery_label(label) -> str | None:
    """A gallery index label as the app uses it: None for no label (None, -1, ""), else a string."""
    if label is None or str(label).strip() in NO_LABEL_VALUES:
        return None
    return str(label)


def mode_note(config: dict) -> str:
    return {"unlabelled": "trained with --unlabelled (each image its own class, seen as two augmented views)",
            "pairs": "trained with --pairs (images linked by the pair file form the classes)"}.get(training_mode(config), "")


# ----------------------------------------------------------------------------- loading (cached)


def launch_run_dir() -> tuple[Path | None, str]:
    """The run directory given at launch and where it came from: the script's own arguments
    (``streamlit run streamlit_app.py -- RUN_DIR`` sets sys.argv = [script, RUN_DIR]), else the
    RETRIEVAL_RUN_DIR environment variable."""
    argv = sys.argv
    if len(argv) > 1 and argv[0] and Path(argv[0]).resolve() == APP_FILE:
        return Path(argv[1]), "command line"
    if os.environ.get(RUN_DIR_ENV):
        return Path(os.environ[RUN_DIR_ENV]), RUN_DIR_ENV
    return None, ""


def file_stamp(*paths: Path) -> str:
    """Changes when any of the files is rewritten (atomic writes give a new inode and mtime)."""
    parts = []
    for path in paths:
        try:
            stat = path.stat()
            parts.append(f"{stat.st_mtime_ns}:{stat.st_ino}:{stat.st_size}")
        except OSError:
            parts.append("-")
    return "|".join(parts)


def index_stamp(run_dir: Path) -> str:
    return file_stamp(run_dir / CONFIG_NAME, run_dir / WEIGHTS_NAME, run_dir / INDEX_DIR / METADATA_NAME)


@st.cache_resource(show_spinner="Loading the model and the gallery index…", max_entries=4)
def load_index(run_dir: str, stamp: str) -> GalleryIndex:
    """The run's gallery index with its model, once per run (and again after a rebuild); warmed
    up (one embedding, the margin chart's template) so that the first query is as fast as the next."""
    from PIL import Image

    import pandas  # noqa: F401  Streamlit turns chart data into Arrow tables with it: import it now, not on the first query
    import pyarrow  # noqa: F401

    index = GalleryIndex.load(run_dir, device="auto")
    index.labels = [gallery_label(label) for label in index.labels]  # a flat gallery: all None (or -1)
    with one_torch_thread():
        vector = index.embed(Image.new("RGB", (64, 64), (128, 128, 128)))
    nearest = index.search(vector, 1)
    for query_label in (None, nearest[0].label):  # the chart's templates without and with a known query class
        figures.margin_spec(nearest, 0.2, query_label=query_label)
    return index


@st.cache_resource(max_entries=4)
def class_items(_index: GalleryIndex, stamp: str) -> dict[str | None, list[int]]:
    """Gallery item ids per label (None for a flat gallery), in item order."""
    items: dict[str | None, list[int]] = {}
    for item, label in enumerate(_index.labels):
        items.setdefault(label, []).append(item)
    return items


@st.cache_data(max_entries=4, show_spinner="Reading the mining log…")
def mining_logs(run_dir: str, stamp: str) -> dict[int, list[dict]]:
    return diagnostics.read_mining_logs(run_dir)


@st.cache_resource(max_entries=8, show_spinner="Projecting the gallery…")
def projection(_index: GalleryIndex, stamp: str, method: str, max_points: int) -> diagnostics.Projection:
    return diagnostics.project_2d(_index.embeddings, method=method, max_points=max_points)


@st.cache_data(max_entries=64, show_spinner=False)
def embed_upload(_index: GalleryIndex, stamp: str, digest: str, _data: bytes, name: str):
    """Decode and embed an uploaded image once per (run, file content): (embedding, thumbnail)."""
    image = load_image_bytes(_data, name)
    with one_torch_thread():
        vector = _index.embed(image)
    return vector, encode_thumbnail(image)


@contextlib.contextmanager
def one_torch_thread():
    """Embed one query image with a single torch thread: a batch of one gains little from more,
    and on a busy machine the extra threads wait for cores (BENCHMARKS.md, app section)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@st.cache_data(max_entries=4096, show_spinner=False)
def thumbnail(path: str, stamp: str) -> bytes | None:
    """A small encoded copy of an image file (read once, then served from the cache), or None
    when it cannot be read."""
    try:
        return encode_thumbnail(load_image(path))
    except RetrievalError:
        return None


def encode_thumbnail(image) -> bytes:
    """At most THUMBNAIL_PX on a side, as JPEG (PNG for tiny images, which JPEG smears)."""
    image = image.copy()
    image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
    buffer = io.BytesIO()
    if max(image.size) < 96:
        image.save(buffer, format="PNG")
    else:
        image.save(buffer, format="JPEG", quality=88)
    return buffer.getvalue()


def show_image(path: str | Path, caption: str | None = None) -> None:
    image = thumbnail(str(path), file_stamp(Path(path)))
    if image is None:
        st.caption(f":material/broken_image: cannot read {Path(path).name}")
    else:
        st.image(image, caption=caption, width="stretch")


def open_index(run_dir: Path, what: str) -> GalleryIndex | None:
    """The run's index, or None after saying why (no index: which command builds one)."""
    if not index_exists(run_dir):
        st.info(f"This run has no gallery index yet, so {what} is not available. Build one with:")
        st.code(f"retrieval index {run_dir} GALLERY_DIR", language="bash")
        st.caption("The Hardest negatives and Training pages work without an index.")
        return None
    try:
        return load_index(str(run_dir), index_stamp(run_dir))
    except RetrievalError as error:
        st.error(str(error))
        return None


# ----------------------------------------------------------------------------- Search


def search_page(run_dir: Path, config: dict) -> None:
    started = time.perf_counter()
    timings: dict[str, float] = {}
    st.header("Search the gallery")
    index = open_index(run_dir, "search")
    if index is None:
        return
    stamp = index_stamp(run_dir)
    margin = float(config.get("margin", 0.2))
    labels = sorted({label for label in index.labels if label is not None})

    top = st.columns([3, 1])
    source = top[0].radio("Query", ["Upload an image", "Pick from the gallery"], horizontal=True, key="query_source")
    k = top[1].number_input("Neighbours (K)", min_value=1, max_value=min(100, len(index)), value=min(10, len(index)), key="k")
    if not labels:
        st.caption(":material/info: This gallery has no class labels (a flat folder), so there is no class filter and "
                   "no nearest positive / negative check; the neighbours, their distances and the margin picture are shown.")

    query_col, result_col = st.columns([1, 3], gap="large")
    with query_col, timed(timings, "query"):
        if source == "Upload an image":
            query = upload_query(index, stamp, labels)
        else:
            query = gallery_query(index, stamp, labels)
    if query is None:
        return
    vector_or_image, query_name, query_label, exclude = query

    with timed(timings, "search"):
        explanation = diagnostics.explain_search(index, vector_or_image, int(k), margin=margin,
                                                 query_label=query_label, exclude_item=exclude)
    st.session_state["last_query"] = {"stamp": stamp, "vector": explanation.vector, "name": query_name}
    with result_col, timed(timings, "neighbours"):
        show_neighbours(explanation, query_label)
    with timed(timings, "margin picture"):
        show_margin(explanation, query_label, margin, gallery_labelled=bool(labels), config=config)
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


def upload_query(index: GalleryIndex, stamp: str, labels: list[str]):
    types = sorted(ext.lstrip(".") for ext in IMAGE_EXTENSIONS)
    uploaded = st.file_uploader("Query image", type=types, key="upload",
                                help="JPEG, PNG, WebP, BMP, GIF, TIFF, PGM/PPM; at most 100 megapixels.")
    if uploaded is None:
        st.info("Upload an image to see its nearest gallery images.")
        return None
    data = uploaded.getvalue()
    try:
        vector, preview = embed_upload(index, stamp, hashlib.sha1(data).hexdigest(), data, uploaded.name)
    except RetrievalError as error:
        st.error(f"{error}. Upload a JPEG, PNG, WebP or other image file.")
        return None
    st.image(preview, caption=uploaded.name, width="stretch")
    label = None
    if labels:
        chosen = st.selectbox("Its class, if you know it", [UNKNOWN] + labels, key="upload_label",
                              help="Type to filter. With a class, the page shows the nearest positive and negative.")
        label = None if chosen == UNKNOWN else chosen
    return vector, uploaded.name, label, None


def gallery_query(index: GalleryIndex, stamp: str, labels: list[str]):
    by_label = class_items(index, stamp)
    if labels:
        chosen = st.selectbox("Class", [ALL_CLASSES] + labels, key="pick_class")
        items = list(range(len(index))) if chosen == ALL_CLASSES else by_label.get(chosen, [])
    else:
        items = list(range(len(index)))
    n_pages = max(1, math.ceil(len(items) / PICKER_PAGE))
    page = st.number_input(f"Page (of {n_pages})", min_value=1, max_value=n_pages, value=1, key="pick_page") if n_pages > 1 else 1
    shown = items[(page - 1) * PICKER_PAGE : page * PICKER_PAGE]
    picked = st.session_state.get("picked")
    if picked is not None and (picked.get("stamp") != stamp or picked.get("item", len(index)) >= len(index)):
        picked = None
    if picked is not None:
        item = picked["item"]
        show_image(index.path(item), caption=f"query: {Path(index.relative_paths[item]).name}")
        label = index.labels[item]
        st.caption(("" if label is None else f"class {label} · ") + "the query itself is left out of the results")
    with st.expander("Gallery (pick a query)", expanded=picked is None):
        columns = st.columns(3)
        for position, item in enumerate(shown):
            with columns[position % 3]:
                show_image(index.path(item))
                if st.button(Path(index.relative_paths[item]).name, key=f"pick-{item}", width="stretch"):
                    st.session_state["picked"] = {"stamp": stamp, "item": item}
                    st.rerun()
        st.caption(f"{len(items)} images; page {page} of {n_pages}")
    if picked is None:
        st.info("Pick a gallery image as the query.")
        return None
    item = picked["item"]
    vector = index.embeddings[item]
    return vector, Path(index.relative_paths[item]).name, index.labels[item], item


def show_neighbours(explanation: diagnostics.SearchExplanation, query_label: str | None) -> None:
    neighbours = explanation.neighbours
    band_low, band_high = explanation.band or (0.0, 0.0)
    st.subheader(f"Top {len(neighbours)} neighbours")
    st.caption("d: distance between unit embeddings (0 to 2, the units of the training margin); "
               "cos: cosine similarity = 1 − d²/2. ◆ marks a neighbour within the margin of the best match.")
    for start in range(0, len(neighbours), GRID_COLUMNS):
        columns = st.columns(GRID_COLUMNS)
        for column, (rank, n) in zip(columns, enumerate(neighbours[start : start + GRID_COLUMNS], start=start + 1)):
            with column, st.container(border=True, key=f"neighbour-{rank}"):
                show_image(n.path)
                mark = "◆ " if n.distance <= band_high else ""
                relation = ""
                if query_label is not None and n.label is not None:
                    relation = " :green[:material/check:]" if n.label == query_label else " :red[:material/close:]"
                st.markdown(f"**{rank}. {n.label if n.label is not None else Path(n.path).name}**{relation}  \n"
                            f"{mark}d = {n.distance:.3f}  \n"
                            f"cos = {n.similarity:.3f}")
                if n.label is not None:  # without a label the file name is the card's title already
                    st.caption(Path(n.path).name)


def show_margin(explanation: diagnostics.SearchExplanation, query_label: str | None, margin: float, *,
                gallery_labelled: bool = True, config: dict | None = None) -> None:
    st.subheader("Margin picture")
    if not explanation.neighbours:
        return
    low, high = explanation.band
    chart_col, text_col = st.columns([3, 1], gap="large")
    with chart_col:
        st.vega_lite_chart(figures.margin_spec(explanation.neighbours, margin, query_label=query_label), width="stretch")
    with text_col:
        st.markdown(
            f"The band runs from the nearest distance **{low:.3f}** to **{high:.3f}** (+ margin ε = {margin:g}). "
            f"**{explanation.within_margin} of {len(explanation.neighbours)}** neighbours lie inside it: training "
            "asked for a margin of ε between a match and a non-match, so items in the band are not separated "
            "from the best match by that margin."
        )
    report = explanation.report
    if report is None:
        if gallery_labelled:
            st.caption("Give the query's class (or pick a gallery image) to see its nearest positive and negative.")
        return
    st.subheader("Nearest positive and nearest negative")
    if config is not None and not trained_with_labels(config):
        st.caption(f"The classes are the gallery's folders; this run was {mode_note(config)}, so they did not guide training.")
    pos_col, neg_col, verdict_col = st.columns([1, 1, 2], gap="large")
    with pos_col:
        if report.positive is None:
            st.info(f"No other gallery image of class {report.query_label}.")
        else:
            show_image(report.positive.path)
            st.markdown(f"positive: **{report.positive.label}**  \nd_ap = {report.positive.distance:.3f}")
    with neg_col:
        if report.negative is None:
            st.info("No gallery image of another class.")
        else:
            show_image(report.negative.path)
            st.markdown(f"negative: **{report.negative.label}**  \nd_an = {report.negative.distance:.3f}")
    with verdict_col:
        if report.gap is None:
            st.info("Both a positive and a negative are needed to compare against the margin.")
        elif report.clears_margin:
            st.success(f"Clears the margin: d_an − d_ap = {report.gap:.3f} ≥ ε = {margin:g}.")
        elif report.gap >= 0:
            st.warning(f"Inside the margin: d_an − d_ap = {report.gap:.3f} < ε = {margin:g} "
                       f"(violation {report.violation:.3f}); the positive still ranks first, but a triplet "
                       "loss would still push these apart.")
        else:
            st.error(f"The negative is nearer than the positive: d_an − d_ap = {report.gap:.3f} "
                     f"(violation {report.violation:.3f}); the top match is of the wrong class.")


# ----------------------------------------------------------------------------- Hardest negatives


def mining_page(run_dir: Path, config: dict) -> None:
    st.header("Hardest negatives")
    margin = float(config.get("margin", 0.2))
    mining_dir = run_dir / runs.MINING_DIR
    stamp = file_stamp(mining_dir, *sorted(mining_dir.glob("epoch_*.jsonl"))) if mining_dir.is_dir() else "-"
    logs = mining_logs(str(run_dir), stamp)
    if not logs:
        st.info("This run has no mining log (mining/epoch_NNN.jsonl). `retrieval train` writes the hardest "
                "mined triplets of each epoch there; a run trained for 0 epochs, or without a miner, has none.")
        return
    metrics = runs.read_metrics(run_dir)
    hardness = diagnostics.hardness_by_epoch(logs, metrics, margin=margin)
    st.altair_chart(figures.hardness_chart(hardness, margin), width="content")
    st.caption("Left: mean d_an − d_ap of each epoch's logged hardest triplets; a triplet whose gap is below the "
               "margin ε still has a loss, below 0 its negative is nearer than its positive. Right: the fraction of "
               "all mined triplets with a loss (metrics.jsonl).")

    labelled = trained_with_labels(config)
    mode = training_mode(config)
    if mode == "unlabelled":
        st.caption(":material/info: Trained without labels (--unlabelled): each triplet is two augmented views of one "
                   "file (view 1, view 2; the pictures show the file itself) and another image of the batch. "
                   "There are no classes, so no class filter and no table of confused class pairs.")
    elif not labelled:
        st.caption(":material/info: Trained without class labels (--pairs): the positive is linked to the anchor through "
                   "the pair file, the negative is an image of another linked group. Groups are not classes, so there "
                   "is no class filter and no table of confused class pairs.")

    image_pairs = diagnostics.pair_history(logs, by="image")
    class_pairs = diagnostics.pair_history(logs, by="class") if labelled else {}
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

    n_pages = max(1, math.ceil(len(rows) / TRIPLETS_PAGE))
    st.markdown(f"**{len(rows)}** logged triplets in epoch {epoch}, hardest first "
                f"(violation = ε − (d_an − d_ap); positive: the negative lies inside the margin).")
    page = 1
    if n_pages > 1:
        page = st.columns([1, 3])[0].number_input(f"Page (of {n_pages})", min_value=1, max_value=n_pages, value=1, key="mining_page")
    for number, row in enumerate(rows[(page - 1) * TRIPLETS_PAGE : page * TRIPLETS_PAGE], start=(page - 1) * TRIPLETS_PAGE + 1):
        show_triplet(number, row, config, margin, image_pairs, class_pairs)

    if not labelled:
        return
    st.subheader("Class pairs confused most often")
    confused = sorted(class_pairs.items(), key=lambda kv: (-len(kv[1]), kv[0]))[:15]
    counts: dict[tuple[str, str], list[float]] = {}
    for rows_of_epoch in logs.values():
        for r in rows_of_epoch:
            counts.setdefault(diagnostics.class_pair(str(r["anchor_label"]), str(r["negative_label"])), []).append(float(r["d_an_minus_d_ap"]))
    st.dataframe(
        [{"class A": a, "class B": b, "epochs hard": len(e), "in epochs": ", ".join(map(str, e)),
          "triplets logged": len(counts[(a, b)]), "mean d_an − d_ap": round(sum(counts[(a, b)]) / len(counts[(a, b)]), 4)}
         for (a, b), e in confused],
        hide_index=True, width="stretch",
    )


def show_triplet(number: int, row: dict, config: dict, margin: float, image_pairs, class_pairs) -> None:
    violation = margin - float(row["d_an_minus_d_ap"])
    labelled = trained_with_labels(config)
    titles = ROLE_TITLES.get(training_mode(config), ("anchor", "positive", "negative"))
    with st.container(border=True, key=f"triplet-{number}"):
        columns = st.columns([1, 1, 1, 2])
        for column, role, title in zip(columns, ("anchor", "positive", "negative"), titles):
            with column:
                path = runs.resolve_logged_path(config, row[f"{role}_path"])
                show_image(path)
                name = Path(row[f"{role}_path"]).name
                if labelled:
                    st.markdown(f"{role}: **{row[f'{role}_label']}**")
                    st.caption(name)
                else:  # the label is a pseudo-label: the image's own path (--unlabelled) or its linked group (--pairs)
                    st.markdown(f"**{title}**")
                    group = "" if training_mode(config) == "unlabelled" else f" · {row[f'{role}_label']}"
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


# ----------------------------------------------------------------------------- Embedding map


def map_page(run_dir: Path, config: dict) -> None:
    st.header("Embedding map")
    index = open_index(run_dir, "the embedding map")
    if index is None:
        return
    stamp = index_stamp(run_dir)
    methods = ["PCA"] + (["UMAP"] if diagnostics.umap_available() else [])
    controls = st.columns([1, 2])
    method = controls[0].radio("Projection", methods, horizontal=True, key="map_method")
    sizes = [s for s in (500, 1000, 2000, 5000, 10000, 20000) if s < len(index)] + [len(index)]
    max_points = len(index)
    if len(sizes) > 1:
        max_points = controls[1].select_slider("Points drawn", options=sizes, value=min(sizes, key=lambda s: abs(s - 2000)),
                                               key="map_points", help="Large galleries are drawn as a random sample.")
    if len(methods) == 1:
        st.caption("UMAP is offered when umap-learn is installed: `pip install 'retrieval[umap]'`.")
    fitted = projection(index, stamp, method.lower(), int(max_points))
    names = [index.relative_paths[i] for i in fitted.items]
    labels, colour_title, colour_note = map_colours(index, fitted.items)
    last = st.session_state.get("last_query")
    query_xy, query_name = None, "query"
    if last is not None and last.get("stamp") == stamp:
        query_xy = fitted.transform(last["vector"])[0]
        query_name = last["name"]
    st.altair_chart(figures.embedding_map(fitted.coords, labels, names, query=query_xy, query_name=query_name,
                                          colour_title=colour_title), width="stretch")
    shown = f"all {len(index)}" if len(fitted.items) == len(index) else f"{len(fitted.items)} of {len(index)} (drawn at random)"
    explained = ""
    if fitted.explained is not None:
        explained = f"; the axes hold {fitted.explained[0]:.0%} and {fitted.explained[1]:.0%} of the variance"
    query_text = (f" The black cross is the last query, {query_name}." if query_xy is not None
                  else " Search on the Search page to place the query on the map.")
    st.caption(f"{method} of the gallery embeddings: {shown} images{explained}. Hover for the image name; "
               f"scroll to zoom, drag to pan.{query_text}")
    if colour_note:
        st.caption(colour_note)


def map_colours(index: GalleryIndex, items) -> tuple[list[str | None] | None, str, str]:
    """(labels to colour the map's points by, what they are, a note): the class when the gallery has
    labels; else the folder when the points come from several folders; else nothing (labels None)."""
    labels = [index.labels[i] for i in items]
    if any(label is not None for label in labels):
        return labels, "class", ""
    folders = [index.path(int(i)).parent for i in items]
    distinct = set(folders)
    if len(distinct) > 1:
        short = len({f.name for f in distinct}) == len(distinct)
        return ([f.name if short else str(f) for f in folders], "folder",
                ":material/info: The gallery has no class labels, so the points are coloured by the folder they come from.")
    return None, "", ":material/info: The gallery has no class labels (one flat folder), so the points are not coloured."


# ----------------------------------------------------------------------------- Training


def training_page(run_dir: Path, config: dict) -> None:
    st.header("Training")
    margin = float(config.get("margin", 0.2))
    metrics = runs.read_metrics(run_dir)
    validation = has_validation(config)
    if not validation:
        st.caption(":material/info: This run held out no classes (a flat folder, or --val-fraction 0): "
                   "no Recall@1 / MAP@R curves and no held-out distances.")
        metrics = [{key: value for key, value in row.items() if key not in VALIDATION_METRICS} for row in metrics]
    if metrics:
        st.altair_chart(figures.training_curves(metrics), width="content")
        if validation:
            st.caption("Epoch 0 is the untrained model. Recall@1 and MAP@R are measured on the held-out classes"
                       + ("" if trained_with_labels(config) else " (their labels are used only to measure, not to train)") + ".")
        else:
            st.caption("Epoch 0 is the untrained model.")
        with st.expander("metrics.jsonl"):
            st.dataframe(metrics, hide_index=True, width="stretch")
    else:
        st.info("This run has no metrics.jsonl: `retrieval train` writes one row per epoch.")

    if validation:
        held_out_distances(run_dir, margin)
    with st.expander("config.json"):
        st.json(config, expanded=False)


def held_out_distances(run_dir: Path, margin: float) -> None:
    st.subheader("Held-out distances")
    val = runs.read_val_distances(run_dir)
    if not val or not (val.get("positive") or val.get("negative")):
        st.info("This run has no val_distances.json: it is written after training when classes are held out "
                "(--val-fraction > 0).")
    else:
        summary = diagnostics.distance_summary(val, margin)
        st.altair_chart(figures.distance_histogram(val.get("positive") or [], val.get("negative") or [], margin,
                                                   median_positive=summary["median_positive"]), width="stretch")
        text = (f"{summary['n_positive']} positive and {summary['n_negative']} negative pairs of held-out classes. ")
        if summary["threshold"] is not None and summary["negatives_inside"] is not None:
            text += (f"Median positive distance {summary['median_positive']:.3f}; "
                     f"{summary['negatives_inside']:.1%} of negative pairs are nearer than median d_ap + ε = "
                     f"{summary['threshold']:.3f}, i.e. inside the margin for a typical positive.")
        st.caption(text)


# ----------------------------------------------------------------------------- layout


def choose_run() -> Path | None:
    run_dir, source = launch_run_dir()
    if run_dir is not None:
        st.sidebar.caption(f"Run from {source}")
        return run_dir
    found: dict[str, Path] = {}
    for models_dir in (Path.cwd() / "models", APP_FILE.parent / "models"):
        for run in runs.list_runs(models_dir):
            found.setdefault(str(run.resolve()), run)
    if not found:
        st.info("No run directory. Start the app with `retrieval app RUN_DIR` (or "
                "`streamlit run streamlit_app.py -- RUN_DIR`), set RETRIEVAL_RUN_DIR, or train a run into models/ "
                "with `retrieval train DATA_DIR --out models/NAME`.")
        return None
    options = [str(run) for run in found.values()]
    chosen = st.sidebar.selectbox("Run", options, format_func=lambda p: Path(p).name, key="run",
                                  help="Run directories under models/, newest first.")
    return Path(chosen)


def main() -> None:
    st.set_page_config(page_title="Retrieval", page_icon=":material/image_search:", layout="wide")
    st.sidebar.title(":material/image_search: Retrieval")
    run_dir = choose_run()
    if run_dir is None:
        return
    try:
        config = read_config(run_dir)
    except RetrievalError as error:
        st.error(str(error))
        return
    st.sidebar.markdown(f"**{run_dir.name}**  \n`{run_dir}`")
    st.sidebar.caption(
        f"{config.get('backbone')} · D = {config.get('embedding_dim')} · {config.get('image_size')} px  \n"
        f"loss {config.get('loss', '?')} · miner {config.get('miner', '?')} · margin ε = {config.get('margin', '?')}"
        + (f"  \ntrained {config['mode']} (no class labels)" if config.get("mode") in ("unlabelled", "pairs") else "")
        + ("" if has_validation(config) else "  \nno held-out classes")
    )
    page = st.sidebar.radio("Page", PAGES, key="page")
    try:
        {"Search": search_page, "Hardest negatives": mining_page,
         "Embedding map": map_page, "Training": training_page}[page](run_dir, config)
    except RetrievalError as error:
        st.error(str(error))


main()
