"""The Search page for a face run (``retrieval train --faces``): faces, not photos, are searched.

The uploaded photo is shown with its face boxes drawn and numbered; the user picks a face (default
the largest) and every face gets a result row: its aligned crop (what the model embeds) beside its
neighbours and the open-set verdict, the picked face's row first and then its margin picture (and, given
its class, its nearest positive and negative: the Search page's ``explain``). Neighbours are shown as their
gallery face crops (``RUN_DIR/faces/``, :func:`retrieval.faces.run_faces.crop_file`; the box cut
from the photo when the crop is not cached), with the photo a click away: a *photo* button opens
it large, the face boxed and numbered as the gallery numbers it (:func:`photo_button`). An upload
is detected once per file content in this session and never written to the run.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import streamlit as st
from PIL import Image, ImageDraw, ImageFont

from app_pages.common import (decode_upload, file_stamp, item_name, known_class_picker, neighbour_distance, one_torch_thread,
                              path_key, relation_mark, upload_refusal)
from retrieval.data import IMAGE_EXTENSIONS, load_image
from retrieval.errors import RetrievalError
from retrieval.faces.detect import HARDER
from retrieval.faces.face_search import FaceResult, search_aligned_faces
from retrieval.faces.run_faces import crop_file, own_crop, run_pipeline
from retrieval.index import GalleryIndex
from retrieval.run import RunConfig, resolve_logged_path
from retrieval.safe_text import markdown_text

__all__ = ["LOOKED_HARDER", "PHOTO_PX", "PickedFace", "class_picker", "draw_boxes", "face_picker", "face_pipeline",
           "face_search_section", "largest_face", "logged_image", "look_harder_toggle", "no_face_message", "photo_button",
           "photo_faces", "photo_with_face"]

GRID_COLUMNS = 5
BOX_COLOUR = (255, 64, 64)
#: a gallery face's photo, as its *photo* button opens it: at most this many pixels a side
PHOTO_PX = 1200
PHOTO_MIN_PX = 360  # the photo dialog shows a smaller photo this wide
#: the end of a photo's caption when its faces were looked for harder
LOOKED_HARDER = ", looking harder (a box may hold something that is not a face)"


@st.cache_resource(max_entries=8)  # two a run: its own and the one looking harder
def face_pipeline(run_dir: bytes, stamp: str, harder: bool = False):
    """The run's face pipeline (MTCNN loaded once per run; ``run_dir``: :func:`~app_pages.common.path_key`
    bytes), or with ``harder`` the same pipeline looking harder for faces (:meth:`~retrieval.faces.FacePipeline.harder`)."""
    pipeline = run_pipeline(os.fsdecode(run_dir), RunConfig.read(os.fsdecode(run_dir)))
    return pipeline.harder() if harder else pipeline


def look_harder_toggle(key: str) -> bool:
    """The *Look harder* switch: this page's uploads searched for faces from 20 px at lower thresholds
    (``--look-harder``); off by default."""
    low = HARDER["thresholds"]
    return st.toggle("Look harder for faces", key=key,
                     help=f"For a face the run's detector misses: faces from {HARDER['min_face_size']} px, P-/R-Net "
                          f"{low[0]:g}, O-Net {low[2]:g}, rechecked at {HARDER['recheck_threshold']:g} (as `--look-harder`). "
                          "It may also box something that is not a face: pick the face you mean.")


def largest_face(results: list[FaceResult]) -> int:
    """The index of the face with the largest box (the default pick)."""
    return max(range(len(results)), key=lambda i: results[i].face.area)


def draw_boxes(photo: Image.Image, boxes: list[tuple[float, float, float, float]],
               numbers: Sequence[int] | None = None) -> Image.Image:
    """A copy of ``photo`` with each box (x0, y0, x1, y1) drawn and numbered 1, 2, ... in order (or
    by ``numbers``): the number in white on the box's colour at its top-left corner, its height 1/25
    of the photo's longer side (at least 12 px), so that it stays legible when the photo is shown small."""
    shown = photo.copy()
    draw = ImageDraw.Draw(shown)
    width = max(2, round(max(photo.size) / 200))
    font = ImageFont.load_default(size=max(12, round(max(photo.size) / 25)))
    for number, (x0, y0, x1, y1) in zip(numbers if numbers is not None else range(1, len(boxes) + 1), boxes):
        draw.rectangle([x0, y0, x1, y1], outline=BOX_COLOUR, width=width)
        left, top, right, bottom = draw.textbbox((x0, y0), str(number), font=font)
        pad = width
        draw.rectangle([x0, y0, right + 2 * pad, bottom + 2 * pad], fill=BOX_COLOUR)
        draw.text((x0 + pad, y0 + pad), str(number), fill=(255, 255, 255), font=font)
    return shown


@dataclass(frozen=True)
class PickedFace:
    """The upload's face the page explains in full (margin picture, nearest positive and negative,
    the map's last query): its result, its name ("photo.jpg · face 2") and the class the user gave it."""

    result: FaceResult
    name: str
    label: str | None


def face_search_section(index: GalleryIndex, run_dir: Path, stamp: str, k: int, labels: Sequence[str] = (),
                        explain: Callable[[PickedFace], None] | None = None) -> bool:
    """Upload a photo, see its faces boxed, and one result row a face (see the module docstring); the
    picked face's row first, then ``explain`` of it (the Search page's margin picture), then the others.
    True when faces were searched (not before an upload, nor for one refused or without a face)."""
    types = sorted(ext.lstrip(".") for ext in IMAGE_EXTENSIONS)
    uploaded = st.file_uploader("Query photo", type=types, key="upload", help="A photo with one or more faces.")
    harder = look_harder_toggle("search_look_harder")
    if uploaded is None:
        st.info("Upload a photo: every face found in it is searched in the gallery's faces.")
        return False
    data = uploaded.getvalue()
    try:
        photo = decode_upload(data, uploaded.name)
    except RetrievalError as error:
        st.error(upload_refusal(error))
        return False
    digest = hashlib.sha1(data).hexdigest()
    results = _searched(index, path_key(run_dir), stamp, digest, photo, int(k), harder)
    if not results:
        st.image(photo, caption=markdown_text(uploaded.name), width="content")
        st.warning(no_face_message(uploaded.name, "this run searches faces, so there is nothing to search",
                                   face_pipeline(path_key(run_dir), stamp, harder), photo.size, harder))
        return False
    photo_col, pick_col = st.columns([2, 1], gap="large")
    photo_col.image(draw_boxes(photo, [r.face.box for r in results]), caption=f"{markdown_text(uploaded.name)}: {len(results)} face(s) found"
                    + (LOOKED_HARDER if harder else ""), width="stretch")
    with pick_col:
        picked = face_picker(results, digest, harder)
        label = class_picker(labels, (digest, picked, harder))
    order = [picked, *(i for i in range(len(results)) if i != picked)]
    pipeline = face_pipeline(path_key(run_dir), stamp)  # the run's own: it finds the gallery's cached crops
    for i in order:
        show_face_row(index, pipeline, results[i], i + 1, query_label=label if i == picked else None)
        if i == picked and explain is not None:
            explain(PickedFace(results[i], f"{uploaded.name} · face {i + 1}", label))
    return True


def face_picker(results: list[FaceResult], digest: str, harder: bool) -> int:
    """The *Face* select box: which face is explained in full and shown first. Keyed by the photo's
    content and the *Look harder* switch, as the Verify page's, so a new photo (or the same looked at
    harder: other faces) starts on its largest face, not on the number picked before."""
    labels = [f"face {i + 1}" + (" (largest)" if i == largest_face(results) else "") for i in range(len(results))]
    return st.selectbox("Face", range(len(results)), index=largest_face(results), format_func=lambda i: labels[i],
                        key=f"face_pick_{digest}_{harder}", help="The picked face's row comes first, with its margin picture.")


def class_picker(labels: Sequence[str], face: tuple[str, int, bool]) -> str | None:
    """The picked face's class, if the user knows it (a labelled gallery only): with it the page marks
    its neighbours ✓ / ✗ and shows its nearest positive and negative. ``face``: (the photo's content,
    the face picked, *Look harder*): another photo or another face starts on "(unknown)"."""
    if not labels:
        return None
    return known_class_picker(labels, ("face", *face), help="Type to filter. For the picked face: its neighbours marked "
                                                            "✓ / ✗, and its nearest positive and negative.")


def show_face_row(index: GalleryIndex, pipeline, result: FaceResult, number: int, query_label: str | None = None) -> None:
    """One face: its aligned crop and verdict beside its neighbours (as face crops, photo in an expander);
    with ``query_label`` each neighbour marked ✓ (that class) or ✗."""
    nearest = item_name(index, result.neighbours[0].item) if result.neighbours else None
    with st.container(border=True, key=f"face-row-{number}"):
        crop_col, neighbours_col = st.columns([1, GRID_COLUMNS], gap="medium")
        with crop_col:
            st.image(result.face.crop, caption=f"face {number}, aligned (score {result.face.score:.2f})", width="stretch")
            if index.threshold is not None:
                st.caption(markdown_text(result.verdict.describe(index.threshold.target_far, nearest=nearest)))
        with neighbours_col:
            for start in range(0, len(result.neighbours), GRID_COLUMNS):  # a row of columns each: the cards line up
                columns = st.columns(GRID_COLUMNS)
                for column, (rank, n) in zip(columns, enumerate(result.neighbours[start : start + GRID_COLUMNS], start=start + 1)):
                    with column:
                        st.image(neighbour_face(index, pipeline, n.item), width="stretch")
                        name = item_name(index, n.item)
                        st.markdown(f"**{rank}. {markdown_text(n.label if n.label is not None else name)}**"
                                    f"{relation_mark(n.label, query_label)}  \n"
                                    f"{neighbour_distance(index, n.distance, n.match)}  \n"
                                    f"cos = {n.similarity:.3f}")
                        photo_button(index, n.item, key=f"photo-{number}-{rank}",
                                     detail=f"Neighbour {rank} of face {number} of the query: d = {n.distance:.3f}")


def photo_button(index: GalleryIndex, item: int, key: str, detail: str | None = None) -> None:
    """A gallery face's *photo* button: it opens the photo the face was found in, large, with that
    face boxed (:func:`photo_dialog`; ``detail``, plain text: what the face is to the query, shown above it)."""
    if st.button("photo", key=key, icon=":material/photo:", width="stretch",
                 help="The photo this face was found in, with the face boxed"):
        photo_dialog(index, item, detail)


@st.dialog("Photo", width="large")
def photo_dialog(index: GalleryIndex, item: int, detail: str | None = None) -> None:
    """One gallery face's photo, at most PHOTO_PX a side (one under PHOTO_MIN_PX wide is shown that wide), with its box drawn and
    numbered as the gallery numbers the photo's faces (most confident first); ``detail`` above it,
    its label and path beneath."""
    record = index.face(item) or {}
    name = markdown_text(item_name(index, item))
    label = index.labels[item]
    if detail:
        st.markdown(markdown_text(detail))
    where = index.shown_path(item)
    caption = name + ("" if label is None else f" · {markdown_text(label)}") + (
        f" · {markdown_text(where)}" if "/" in where else "")  # the folder, when the path has more than the name
    try:
        path = index.path(item)
    except RetrievalError as error:  # a link leaving the gallery folder: not served
        st.caption(f":material/block: not shown: {name}", help=markdown_text(str(error)))
        return
    image = photo_with_face(path_key(path), file_stamp(Path(path)), tuple(float(v) for v in record.get("box", ())),
                            int(record.get("face", 0)) + 1)
    if image is None:
        st.caption(f":material/broken_image: cannot read {name}")
        return
    with Image.open(io.BytesIO(image)) as shown:  # the header only
        small = shown.width < PHOTO_MIN_PX
    # its own size (a 480 × 360 photo is not blown up to the dialog), but a small one, a 92 × 112 crop, is shown
    # PHOTO_MIN_PX wide: at its own size it was a thumbnail in a large dialog
    st.image(image, caption=caption, width=PHOTO_MIN_PX if small else "content")


@st.cache_data(max_entries=64, show_spinner=False)
def photo_with_face(path: bytes, stamp: str, box: tuple[float, ...], number: int) -> bytes | None:
    """A gallery photo (``path``: :func:`~app_pages.common.path_key` bytes) at most PHOTO_PX a side as
    JPEG, with the face ``box`` (x0, y0, x1, y1 in the photo's pixels; none when empty) drawn and
    numbered ``number``; None when the photo cannot be read."""
    try:
        photo = load_image(os.fsdecode(path))
    except RetrievalError:
        return None
    scale = min(1.0, PHOTO_PX / max(photo.size))
    if scale < 1.0:
        photo = photo.resize((max(1, round(photo.width * scale)), max(1, round(photo.height * scale))), Image.Resampling.LANCZOS)
    if len(box) == 4:
        photo = draw_boxes(photo, [tuple(v * scale for v in box)], numbers=[number])
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def neighbour_face(index: GalleryIndex, pipeline, item: int) -> Image.Image:
    """A gallery item's face: its cached aligned crop, else its box cut from the photo."""
    record = index.face(item) or {}
    cached = crop_file(pipeline, record) if pipeline is not None else None
    try:
        if cached is not None:
            return load_image(cached)
        return load_image(index.path(item)).crop(tuple(int(round(v)) for v in record["box"]))
    except (RetrievalError, KeyError, OSError):
        return Image.new("RGB", (32, 32), (128, 128, 128))


def no_face_message(name: str, consequence: str, pipeline, photo_size: tuple[int, int], harder: bool) -> str:
    """The warning for an upload without a face: what the detector looked for, and *Look harder* when it was off."""
    smaller = pipeline.settings.harder().min_face_size < pipeline.settings.min_face_size
    advice = "" if harder else (" Switch on **Look harder for faces** to look for "
                                + ("smaller faces at lower thresholds." if smaller else "faces at lower thresholds."))
    return f"No face found in {markdown_text(name)}: {consequence}; {markdown_text(pipeline.settings.no_face_hint(photo_size, looked_harder=harder))}.{advice}"


@st.cache_resource(max_entries=16, show_spinner="Finding faces…")
def photo_faces(run_dir: bytes, stamp: str, digest: str, _photo: Image.Image, harder: bool = False) -> list:
    """Every face of an upload, most confident first, aligned as the run aligns (once per run, file
    content and ``harder``; an upload is never written to the run; ``run_dir``: :func:`~app_pages.common.path_key` bytes).
    Detection runs on torch's threads (the cores), as ``retrieval search`` detects: a photo's image
    pyramid is parallel work (1 MP: about 270 ms on one thread, 160 ms on two; BENCHMARKS.md, *Faces*)."""
    return face_pipeline(run_dir, stamp, harder).faces(_photo)


@st.cache_resource(max_entries=64, show_spinner="Finding and searching faces…")
def _searched(_index: GalleryIndex, run_dir: bytes, stamp: str, digest: str, _photo: Image.Image, k: int,
              harder: bool = False) -> list[FaceResult]:
    """Every face of an upload, searched (once per run, file content, K and ``harder``; ``run_dir``:
    :func:`~app_pages.common.path_key` bytes). The photo is detected on torch's threads (as
    :func:`photo_faces`), each face's crop embedded on one (:func:`~app_pages.common.one_torch_thread`)."""
    faces = face_pipeline(run_dir, stamp, harder).faces(_photo)
    with one_torch_thread():
        return search_aligned_faces(_index, faces, k)


def logged_image(config: RunConfig, logged: str, run_dir: Path | None = None) -> Path:
    """The image a mining-log path names. A face run trained on its cached crops, which the log
    names inside the run's ``faces/`` folder: such a path is served from ``run_dir``'s own ``faces/``,
    looked up by name (:func:`~retrieval.faces.run_faces.own_crop`: a run trained with a relative
    ``--out``, or moved since, still shows its crops, and no file outside the run is served); every
    other path is resolved under the data folder as usual."""
    if config.faces is not None and run_dir is not None and (own := own_crop(run_dir, logged)) is not None:
        return own
    return resolve_logged_path(config, logged)
