"""Verify: are two images the same identity / product? Two uploads, one verdict at the run's τ.

Each upload is decoded as the Search page decodes one (:func:`app_pages.common.decode_upload`)
and both are embedded with the run's model (loaded once per weights file,
``st.cache_resource``) by :func:`retrieval.evaluate.verify_pair`, the function behind
``retrieval verify``: d between the unit embeddings, "same" when d ≤ τ. A run without τ shows
the distance and says how to set one. Needs no gallery index.

On a face run (``retrieval train --faces``) the page compares faces, never the photos: each upload
is shown with its faces boxed and numbered (most confident first), the user may pick the face to
compare when a photo has several (default: the most confident, the face ``retrieval verify``
takes), and its aligned crop, what the model embeds, is shown under it. An upload without a face
says so, with what the run's detector looks for.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import streamlit as st

from app_pages.common import (chosen_run, decode_upload, encode_thumbnail, file_stamp, one_torch_thread, path_key,
                              upload_refusal)
from app_pages.search import show_no_threshold, threshold_note
from retrieval.data import IMAGE_EXTENSIONS
from retrieval.errors import RetrievalError
from retrieval.evaluate import verify_pair
from retrieval.run import CONFIG_NAME, WEIGHTS_NAME, RunConfig, load_model
from retrieval.safe_text import markdown_text
from retrieval.verification import distance_and_threshold, percent

SIDES = ("a", "b")
#: a face photo with its boxes drawn, at most this many pixels a side (a column of the page is about 500)
BOXED_PHOTO_PX = 640


def verify_page(run_dir: Path, config: RunConfig) -> None:
    st.header("Verify: same or different?")
    st.caption(("Upload two photos: the page finds their faces, embeds one face of each with this run's model"
                if config.faces is not None else "Upload two images: the page embeds both with this run's model")
               + " and compares their distance d with the run's threshold τ (same when d ≤ τ), as `retrieval verify` does.")
    stamp = file_stamp(run_dir / CONFIG_NAME, run_dir / WEIGHTS_NAME)
    harder = False
    if config.faces is not None:
        from app_pages.faces import look_harder_toggle

        harder = look_harder_toggle("verify_look_harder")
    images, given = {}, {}
    for side, column in zip(SIDES, st.columns(2, gap="large")):
        with column:
            given[side], images[side] = upload_side(side, run_dir if config.faces is not None else None, stamp, harder)
    if not all(given.values()):
        st.info("Upload both photos: a face of each is compared." if config.faces is not None else
                "Upload both images to compare them.")
        return
    if any(image is None for image in images.values()):
        return  # unreadable, or no face: its column says so
    model = load_run_model(path_key(run_dir), stamp)
    with one_torch_thread():
        result = verify_pair(model, config, images["a"], images["b"], device=next(model.parameters()).device)
    show_result(result, run_dir, config)


def upload_side(side: str, face_run: Path | None, stamp: str, harder: bool = False):
    """One of the two uploads: (given, what to embed). What to embed is the decoded image, previewed,
    or on a face run (``face_run``, the run's folder) the aligned crop of the picked face (found by
    the run's pipeline, looking harder with ``harder``); None when the upload is unreadable or has no face."""
    types = sorted(ext.lstrip(".") for ext in IMAGE_EXTENSIONS)
    uploaded = st.file_uploader(f"Image {side.upper()}", type=types, key=f"verify_{side}")
    if uploaded is None:
        return False, None
    data = uploaded.getvalue()
    digest = hashlib.sha1(data).hexdigest()
    try:
        image = decode_cached(digest, data, uploaded.name)
    except RetrievalError as error:
        st.error(upload_refusal(error))
        return True, None
    if face_run is not None:
        return True, picked_face(side, face_run, stamp, digest, image, uploaded.name, harder)
    st.image(encode_thumbnail(image), caption=markdown_text(uploaded.name), width="content")
    return True, image


def picked_face(side: str, run_dir: Path, stamp: str, digest: str, photo, name: str, harder: bool = False):
    """A face run's upload: the photo with its faces boxed, the face to compare (a choice when
    there are several; default the most confident) and its aligned crop, which is returned (None
    and a warning when no face is found). ``harder``: the *Look harder* switch."""
    from app_pages.faces import LOOKED_HARDER, draw_boxes, face_pipeline, no_face_message, photo_faces

    faces = photo_faces(path_key(run_dir), stamp, digest, photo, harder)
    if not faces:
        st.image(encode_thumbnail(photo), caption=markdown_text(name), width="content")
        st.warning(no_face_message(name, "this run compares faces", face_pipeline(path_key(run_dir), stamp, harder), photo.size, harder))
        return None
    # large enough to read the boxes' numbers (at 256 px they were 6 px high), never enlarged past the column
    st.image(encode_thumbnail(draw_boxes(photo, [face.box for face in faces]), side=BOXED_PHOTO_PX),
             caption=f"{markdown_text(name)}: {len(faces)} face(s) found" + (LOOKED_HARDER if harder else ""), width="content")
    picked = 0
    if len(faces) > 1:
        labels = [f"face {i + 1}" + (" (most confident)" if i == 0 else "") for i in range(len(faces))]
        picked = st.selectbox("Face to compare", range(len(faces)), format_func=lambda i: labels[i],
                              key=f"verify_face_{side}_{digest}_{harder}",  # a new photo (or look) starts from its most confident face
                              help="By default the most confident, as `retrieval verify`.")
    face = faces[picked]
    st.image(face.crop, caption=f"face {picked + 1}, aligned (score {face.score:.2f})", width=112)
    return face.crop


@st.cache_data(max_entries=16, show_spinner=False)
def decode_cached(digest: str, _data: bytes, name: str):
    """An upload decoded once per file content."""
    return decode_upload(_data, name)


@st.cache_resource(show_spinner="Loading the model…", max_entries=2)
def load_run_model(run_dir: bytes, stamp: str):
    """The run's model once per weights file (``stamp`` changes when it is rewritten; ``run_dir``:
    :func:`~app_pages.common.path_key` bytes)."""
    import os

    from retrieval.model import resolve_device

    model, _ = load_model(os.fsdecode(run_dir), device=resolve_device("auto"))
    return model


def show_result(result: dict, run_dir: Path, config: RunConfig) -> None:
    """The verdict: same / different at τ, or the distance alone without τ."""
    distance = result["distance"]
    if result["threshold"] is None:
        with st.container(border=True, key="verify_verdict"):
            st.markdown(f"**d = {distance:.3f}**: no verdict without a threshold.")
        show_no_threshold(run_dir)
        return
    (d, tau), at = distance_and_threshold(distance, result["threshold"]), percent(result["target_far"])
    if result["same"]:
        text = f":green[:material/check_circle:] **same: d = {d} ≤ τ = {tau} at FAR {at}**"
    else:
        text = f":orange[:material/cancel:] **different: d = {d} > τ = {tau} at FAR {at}**"
    with st.container(border=True, key="verify_verdict"):
        st.markdown(text)
        st.caption(threshold_note(config))


if __name__ == "__main__":  # run as a page by st.navigation (which names it __main__), not on import
    verify_page(*chosen_run())
