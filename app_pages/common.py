"""What the app's pages share: the chosen run, the cached model, index and mining log, thumbnails.

``streamlit_app.py`` reads the run's config once per script run and hands it to the page through
:func:`remember_run` / :func:`chosen_run` (the session's state, so two browser tabs on two runs
never mix). The model and index are loaded once per run and file version (``st.cache_resource``,
keyed by :func:`index_stamp`: a rebuilt index or retrained model is loaded again), thumbnails and
mining logs once per file version (``st.cache_data``). Run directories are read only through
:mod:`retrieval.run` and :mod:`retrieval.index`.

Cached functions take a path as :func:`path_key` bytes, never as a string: Streamlit hashes a string
argument as UTF-8, which a file name that is not valid UTF-8 cannot be (Linux names are bytes; Python
reads ``b"bad\\xffname.jpg"`` as ``"bad\\udcffname.jpg"``, a lone surrogate, and the hash raised
``UnicodeEncodeError``). Such a name is shown as :func:`~retrieval.safe_text.printable` text (``bad\\xffname.jpg``).
"""

from __future__ import annotations

import base64
import contextlib
import io
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import streamlit as st

from retrieval import diagnostics, figures
from retrieval.data import load_image, load_image_bytes
from retrieval.errors import RetrievalError
from retrieval.index import GalleryIndex, index_exists
from retrieval.projection import Projection, project_2d
from retrieval.run import (
    CONFIG_NAME,
    METADATA_NAME,
    MINING_DIR,
    WEIGHTS_NAME,
    RunConfig,
    index_dir,
    mining_epochs,
    mining_log_path,
)
from retrieval.safe_text import markdown_text, printable

__all__ = [
    "ALL_CLASSES", "UNKNOWN_CLASS", "ChosenRun", "chosen_run", "class_items", "decode_upload", "embed_upload", "file_stamp", "gallery_label",
    "known_class_picker", "neighbour_distance",
    "index_stamp", "item_name", "load_index", "loss_margin", "loss_text", "mining_logs", "mining_stamp", "open_index", "path_key", "projection",
    "relation_mark", "remember_run",
    "show_image", "show_item", "thumbnail",
]

ALL_CLASSES = "(all classes)"
UNKNOWN_CLASS = "(unknown)"  # an upload's class select box: the user does not know it
THUMBNAIL_PX = 256
FACE_CONTEXT = 0.15  # a face gallery's thumbnails: the box widened by this share of its size on each side
#: uploads decoded at once by the whole server: decoding an image at the query limit takes up to a few hundred MB
#: (BENCHMARKS.md "decode"), so many sessions uploading together cost at most this many decodes' memory
UPLOAD_DECODES_AT_ONCE = 2
_upload_decodes = threading.BoundedSemaphore(UPLOAD_DECODES_AT_ONCE)
NO_LABEL_VALUES = ("", "-1")  # gallery labels that mean "no label" (besides None)
_RUN_KEY = "chosen_run"
GALLERY_ROOTS_ENV = "RETRIEVAL_GALLERY_ROOTS"  # set by `retrieval app --gallery-root`


# ----------------------------------------------------------------------------- the chosen run


class ChosenRun(NamedTuple):
    """The run the sidebar chose and its config.json, as the pages see them (``page(*chosen_run())``)."""

    run_dir: Path
    config: RunConfig


def remember_run(run_dir: Path, config: RunConfig) -> None:
    """Called by ``streamlit_app.py`` on every script run, before the page runs."""
    st.session_state[_RUN_KEY] = ChosenRun(Path(run_dir), config)


def chosen_run() -> ChosenRun:
    """The run this session's entry script chose (a page started on its own says how to start the app)."""
    if _RUN_KEY not in st.session_state:
        st.error("Start the app with `retrieval app RUN_DIR` or `streamlit run streamlit_app.py -- RUN_DIR`; "
                 "the files in app_pages/ are its pages, not apps of their own.")
        st.stop()
    return st.session_state[_RUN_KEY]


def loss_margin(config: RunConfig) -> float | None:
    """The margin ε of the run's loss, or None when its loss takes none (InfoNCE, NCE, N-pair:
    :data:`retrieval.losses.LOSS_SETTING`; config.json still records ε, which only a miner, if any,
    and the mining log's counts used). A loss this version does not know counts as a margin loss."""
    from retrieval.losses import LOSS_SETTING

    return config.margin if LOSS_SETTING.get(str(config.loss), "margin") == "margin" else None


def loss_text(config: RunConfig) -> str:
    """The run's loss and what it trained with, plain text (escape it for Markdown): "triplet, margin
    ε = 0.2", or for a loss without a margin "infonce (temperature 0.1): no margin"."""
    from retrieval.losses import LOSS_SETTING

    name, margin, temperature = config.get("loss", "?"), loss_margin(config), config.get("temperature")
    if margin is not None:
        return f"{name}, margin ε = {margin:g}"
    uses_temperature = LOSS_SETTING.get(str(name)) == "temperature" and temperature is not None
    return f"{name}{f' (temperature {temperature:g})' if uses_temperature else ''}: no margin"


def gallery_label(label) -> str | None:
    """A gallery index label as the app uses it: None for no label (None, -1, ""), else a string."""
    if label is None or str(label).strip() in NO_LABEL_VALUES:
        return None
    return str(label)


# ----------------------------------------------------------------------------- file names


def path_key(path: str | Path) -> bytes:
    """``path`` as a cached function takes it: its file-system bytes (``os.fsencode``), which
    Streamlit's cache hashes whatever the name; ``os.fsdecode`` gives the path back."""
    return os.fsencode(path)



# ----------------------------------------------------------------------------- file versions


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
    """Changes when the model or the index is rewritten, or the index is re-rooted (its item paths change)."""
    stamp = file_stamp(run_dir / CONFIG_NAME, run_dir / WEIGHTS_NAME, index_dir(run_dir) / METADATA_NAME)
    return stamp + "|" + "|".join(ascii(root) for root in gallery_roots() or ())


def mining_stamp(run_dir: Path) -> str:
    """Changes when an epoch's mining log is added or rewritten ("-" without a mining log)."""
    return file_stamp(run_dir / MINING_DIR, *(mining_log_path(run_dir, epoch) for epoch in mining_epochs(run_dir)))


# ----------------------------------------------------------------------------- loading (cached)


@st.cache_resource(show_spinner="Loading the model and the gallery index…", max_entries=4)
def load_index(run_dir: bytes, stamp: str, roots: tuple[bytes, ...] = ()) -> GalleryIndex:
    """The run's gallery index with its model, once per run (and again after a rebuild); warmed
    up (one embedding, the margin chart's template) so that the first query is as fast as the next.
    ``run_dir`` and the gallery ``roots`` are :func:`path_key` bytes."""
    from PIL import Image

    import pandas  # noqa: F401  Streamlit turns chart data into Arrow tables with it: import it now, not on the first query
    import pyarrow  # noqa: F401

    index = GalleryIndex.load(os.fsdecode(run_dir), device="auto", gallery_roots=[os.fsdecode(root) for root in roots] or None)
    index.labels = [gallery_label(label) for label in index.labels]  # a flat gallery: all None (or -1)
    with one_torch_thread():
        vector = index.embed(Image.new("RGB", (64, 64), (128, 128, 128)))
    nearest = index.search(vector, 1)
    for query_label in (None, nearest[0].label):  # the chart's templates without and with a known query class
        figures.margin_spec(nearest, 0.2, query_label=query_label)
    return index


def gallery_roots() -> list[str] | None:
    """The gallery folders given at launch (``retrieval app --gallery-root``, or the
    RETRIEVAL_GALLERY_ROOTS environment variable, folders joined by ``os.pathsep``) for a run
    moved from another machine; None: the index's own."""
    value = os.environ.get(GALLERY_ROOTS_ENV)
    return value.split(os.pathsep) if value else None


def open_index(run_dir: Path, what: str) -> GalleryIndex | None:
    """The run's index, or None after saying why (no index: which command builds one)."""
    if not index_exists(run_dir):
        st.info(f"This run has no gallery index yet, so {what} is not available. Build one with:")
        st.code(f"retrieval index {printable(run_dir)} GALLERY_DIR", language="bash")
        st.caption("The Hardest negatives and Training pages work without an index.")
        return None
    try:
        index = load_index(path_key(run_dir), index_stamp(run_dir), tuple(path_key(root) for root in gallery_roots() or ()))
    except RetrievalError as error:
        st.error(markdown_text(error))
        return None
    for folder in index.unfound_roots():  # as `retrieval search` warns: the pictures would all be "cannot read"
        st.warning(f"The gallery folder {markdown_text(printable(folder))} holds none of the first images the index "
                   "lists for it: if it moved, start the app with `--gallery-root` on its new place. The neighbours "
                   "still come from the index; their pictures cannot be shown.")
    return index


@st.cache_resource(max_entries=4)
def class_items(_index: GalleryIndex, stamp: str) -> dict[str | None, list[int]]:
    """Gallery item ids per label (None for a flat gallery), in item order."""
    items: dict[str | None, list[int]] = {}
    for item, label in enumerate(_index.labels):
        items.setdefault(label, []).append(item)
    return items


@st.cache_data(max_entries=4, show_spinner="Reading the mining log…")
def mining_logs(run_dir: bytes, stamp: str) -> dict[int, list[dict]]:
    """The run's mining log per epoch (``run_dir``: :func:`path_key` bytes)."""
    return diagnostics.read_mining_logs(os.fsdecode(run_dir))


@st.cache_resource(max_entries=8, show_spinner="Projecting the gallery…")
def projection(_index: GalleryIndex, stamp: str, method: str, max_points: int) -> Projection:
    return project_2d(_index.embeddings, method=method, max_points=max_points)


@st.cache_data(max_entries=64, show_spinner=False)
def embed_upload(_index: GalleryIndex, stamp: str, digest: str, _data: bytes, name: str):
    """Decode and embed an uploaded image once per (run, file content): (embedding, thumbnail)."""
    image = decode_upload(_data, name)
    with one_torch_thread():
        vector = _index.embed(image)
    return vector, encode_thumbnail(image)


def upload_refusal(error: RetrievalError) -> str:
    """The page's line for an upload it cannot use: the reason, and what to upload instead (a
    smaller or larger picture for one refused by its size, an image file for anything else)."""
    text, too = str(error), getattr(error, "too", None)  # ImageSizeError: refused by its size
    advice = ("Upload a smaller picture (fewer pixels)" if too == "large" else
              "Upload a larger picture" if too == "small" else
              "Upload a picture closer to square" if too == "elongated" else
              "Upload a JPEG, PNG, WebP or other image file")
    return f"{markdown_text(text)}. {advice}."


def decode_upload(data: bytes, name: str):
    """An upload as an RGB picture (:func:`retrieval.data.load_image_bytes`: supported formats only, at most
    MAX_QUERY_PIXELS, refused from the header), at most :data:`UPLOAD_DECODES_AT_ONCE` at a time server-wide."""
    with _upload_decodes:
        return load_image_bytes(data, name)


#: torch's intra-op threads before the app first narrowed them (None until then): what
#: :func:`one_torch_thread` restores, so that two sessions' overlapping calls cannot leave the
#: process on one thread (each would restore what the other had set)
_PROCESS_THREADS: int | None = None


@contextlib.contextmanager
def one_torch_thread():
    """Embed one query image with a single torch thread: a batch of one gains little from more,
    and on a busy machine the extra threads wait for cores (BENCHMARKS.md, app section). A photo's
    face detection is not narrowed (:func:`app_pages.faces.photo_faces`): its pyramid is parallel work."""
    import torch

    global _PROCESS_THREADS
    if _PROCESS_THREADS is None:
        _PROCESS_THREADS = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(_PROCESS_THREADS)


# ----------------------------------------------------------------------------- thumbnails


@st.cache_data(max_entries=4096, show_spinner=False)
def thumbnail(path: bytes, stamp: str) -> bytes | None:
    """A small encoded copy of an image file (``path``: :func:`path_key` bytes; read once, then
    served from the cache), or None when it cannot be read."""
    try:
        return encode_thumbnail(load_image(os.fsdecode(path)))
    except RetrievalError:
        return None


def encode_thumbnail(image, side: int = THUMBNAIL_PX) -> bytes:
    """At most ``side`` pixels on a side, as JPEG (PNG for tiny images, which JPEG smears)."""
    image = image.copy()
    image.thumbnail((side, side))
    buffer = io.BytesIO()
    if max(image.size) < 96:
        image.save(buffer, format="PNG")
    else:
        image.save(buffer, format="JPEG", quality=88)
    return buffer.getvalue()


@st.cache_data(max_entries=4096, show_spinner=False)
def face_thumbnail(path: bytes, stamp: str, box: tuple[float, float, float, float]) -> bytes | None:
    """A small encoded copy of one face of a photo (``path``: :func:`path_key` bytes): its box, widened
    by FACE_CONTEXT on each side (hair and chin, as the aligned crop shows them), or None when the
    photo cannot be read."""
    try:
        return encode_thumbnail(face_with_context(load_image(os.fsdecode(path)), box))
    except RetrievalError:
        return None


def face_with_context(photo, box: tuple[float, float, float, float]):
    """The face ``box`` of ``photo`` widened by FACE_CONTEXT of its size on each side, within the photo."""
    x0, y0, x1, y1 = box
    pad_x, pad_y = FACE_CONTEXT * (x1 - x0), FACE_CONTEXT * (y1 - y0)
    return photo.crop((round(max(0, x0 - pad_x)), round(max(0, y0 - pad_y)),
                       round(min(photo.width, x1 + pad_x)), round(min(photo.height, y1 + pad_y))))


@st.cache_data(max_entries=20000, show_spinner=False)
def picture_url(path: bytes, stamp: str, box: tuple[float, float, float, float] | None, side: int) -> str | None:
    """A gallery item's picture (``path``: :func:`path_key` bytes) at most ``side`` pixels a side as a
    ``data:`` URL (for a chart's image marks): the whole image, or the face ``box`` with its context;
    None when the file cannot be read."""
    try:
        image = load_image(os.fsdecode(path))
    except RetrievalError:
        return None
    image = face_with_context(image, box) if box is not None else image.copy()
    image.thumbnail((side, side))
    kind = "png" if max(image.size) < 32 else "jpeg"  # JPEG smears tiny images
    buffer = io.BytesIO()
    image.save(buffer, format=kind, quality=85)
    return f"data:image/{kind};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


def relation_mark(label: str | None, query_label: str | None) -> str:
    """" ✓" (green) when a neighbour is of the query's class, " ✗" (red) when of another, "" when either is unknown."""
    if query_label is None or label is None:
        return ""
    return " :green[:material/check:]" if label == query_label else " :red[:material/close:]"


def item_name(index: GalleryIndex, item: int) -> str:
    """A gallery item as the pages name it: its file name (:func:`~retrieval.safe_text.printable`), and in a face gallery
    which face of the photo ("003.jpg · face 2"); plain text (escape it for Markdown)."""
    return printable(Path(index.relative_paths[item]).name) + index.face_suffix(item)


def show_item(index, item: int, caption: str | None = None) -> None:
    """A gallery item's picture: in a face gallery (``--faces``) the item's face cut from its photo,
    else the whole image."""
    path = index.path(item)
    face = index.face(item)
    if face is None:
        show_image(path, caption)
        return
    image = face_thumbnail(path_key(path), file_stamp(Path(path)), tuple(float(v) for v in face["box"]))
    if image is None:
        st.caption(f":material/broken_image: cannot read {markdown_text(Path(path).name)}")
    else:
        st.image(image, caption=caption, width="stretch")


def show_image(path: str | Path, caption: str | None = None) -> None:
    image = thumbnail(path_key(path), file_stamp(Path(path)))
    if image is None:
        st.caption(f":material/broken_image: cannot read {markdown_text(Path(path).name)}")
    else:
        st.image(image, caption=caption, width="stretch")


def known_class_picker(labels: Sequence[str], query: object, help: str) -> str | None:
    """The *Its class, if you know it* select box of an uploaded query; None for "(unknown)". It
    belongs to one query: ``query`` names it (the upload's content, and on a face run the face
    picked and the *Look harder* switch), and a new one starts on "(unknown)". (A class kept from
    the previous photo, or from the other face of a photo, judged the new query against it: its
    right neighbours marked ✗ and "the top match is of the wrong class".) The key stays
    ``upload_label``, the widget's one place in the session."""
    if st.session_state.get("upload_label_query") != query:
        st.session_state["upload_label_query"] = query
        st.session_state["upload_label"] = UNKNOWN_CLASS
    chosen = st.selectbox("Its class, if you know it", [UNKNOWN_CLASS, *labels], key="upload_label", help=help)
    return None if chosen == UNKNOWN_CLASS else chosen


def neighbour_distance(index, distance: float, match: bool | None) -> str:
    """A neighbour card's "d = …" (with " ≤ τ" for a match): three decimals, or as many more as
    tell d from the run's τ (:func:`retrieval.verification.distance_and_threshold`), so that a
    neighbour just beyond τ never reads "d = 0.063" beside a verdict's "τ = 0.063"."""
    from retrieval.verification import distance_and_threshold

    shown = f"{distance:.3f}" if index.threshold is None else distance_and_threshold(distance, index.threshold.threshold)[0]
    return f"d = {shown}{' ≤ τ' if match else ''}"
