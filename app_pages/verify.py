"""Verify: are two images the same identity / product? Two uploads, one verdict at the run's τ.

Each upload is decoded as the Search page decodes one (:func:`app_pages.common.decode_upload`)
and both are embedded with the run's model (loaded once per weights file,
``st.cache_resource``) by :func:`retrieval.evaluate.verify_pair`, the function behind
``retrieval verify``: d between the unit embeddings, "same" when d ≤ τ. A run without τ shows
the distance and says how to set one. Needs no gallery index.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import streamlit as st

from app_pages.common import chosen_run, decode_upload, encode_thumbnail, file_stamp, one_torch_thread
from app_pages.search import show_no_threshold, threshold_note
from retrieval.data import IMAGE_EXTENSIONS
from retrieval.errors import RetrievalError
from retrieval.evaluate import verify_pair
from retrieval.run import CONFIG_NAME, WEIGHTS_NAME, RunConfig, load_model
from retrieval.safe_text import markdown_text
from retrieval.verification import percent

SIDES = ("a", "b")


def verify_page(run_dir: Path, config: RunConfig) -> None:
    st.header("Verify: same or different?")
    st.caption("Upload two images: the page embeds both with this run's model and compares their distance d "
               "with the run's threshold τ (same when d ≤ τ), as `retrieval verify` does.")
    images = {}
    for side, column in zip(SIDES, st.columns(2, gap="large")):
        with column:
            images[side] = upload_side(side)
    if any(image is None for image in images.values()):
        st.info("Upload both images to compare them.")
        return
    model = load_run_model(str(run_dir), file_stamp(run_dir / CONFIG_NAME, run_dir / WEIGHTS_NAME))
    with one_torch_thread():
        result = verify_pair(model, config, images["a"], images["b"], device=next(model.parameters()).device)
    show_result(result, run_dir, config)


def upload_side(side: str):
    """One of the two uploads, decoded and previewed (None until given, or when unreadable)."""
    types = sorted(ext.lstrip(".") for ext in IMAGE_EXTENSIONS)
    uploaded = st.file_uploader(f"Image {side.upper()}", type=types, key=f"verify_{side}")
    if uploaded is None:
        return None
    data = uploaded.getvalue()
    try:
        image = decode_cached(hashlib.sha1(data).hexdigest(), data, uploaded.name)
    except RetrievalError as error:
        st.error(f"{markdown_text(error)}. Upload a JPEG, PNG, WebP or other image file.")
        return None
    st.image(encode_thumbnail(image), caption=markdown_text(uploaded.name), width="stretch")
    return image


@st.cache_data(max_entries=16, show_spinner=False)
def decode_cached(digest: str, _data: bytes, name: str):
    """An upload decoded once per file content."""
    return decode_upload(_data, name)


@st.cache_resource(show_spinner="Loading the model…", max_entries=2)
def load_run_model(run_dir: str, stamp: str):
    """The run's model once per weights file (``stamp`` changes when it is rewritten)."""
    from retrieval.model import resolve_device

    model, _ = load_model(run_dir, device=resolve_device("auto"))
    return model


def show_result(result: dict, run_dir: Path, config: RunConfig) -> None:
    """The verdict: same / different at τ, or the distance alone without τ."""
    distance = result["distance"]
    if result["threshold"] is None:
        with st.container(border=True, key="verify_verdict"):
            st.markdown(f"**d = {distance:.3f}**: no verdict without a threshold.")
        show_no_threshold(run_dir)
        return
    tau, at = result["threshold"], percent(result["target_far"])
    if result["same"]:
        text = f":green[:material/check_circle:] **same: d = {distance:.3f} ≤ τ = {tau:.3f} at FAR {at}**"
    else:
        text = f":orange[:material/cancel:] **different: d = {distance:.3f} > τ = {tau:.3f} at FAR {at}**"
    with st.container(border=True, key="verify_verdict"):
        st.markdown(text)
        st.caption(threshold_note(config))


if __name__ == "__main__":  # run as a page by st.navigation (which names it __main__), not on import
    verify_page(*chosen_run())
