"""Embedding map: the gallery embeddings projected to 2-D, coloured by class, the last query on it.

Up to MAP_PICTURES of the points are drawn as their picture (the face, in a face gallery), so the map
shows what sits where; the "Pictures" toggle turns them off.

PCA, or UMAP when ``umap-learn`` is installed (:func:`retrieval.projection.project_2d`); large
galleries are drawn as a random sample. A gallery without class labels is coloured by folder when
it comes from several folders, else not at all, and the page says so. The last query of the
Search page (same run and index) is drawn as a cross. The chart is
:func:`retrieval.figures.embedding_map`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import streamlit as st

from app_pages.common import chosen_run, file_stamp, index_stamp, open_index, path_key, picture_url, projection
from retrieval import figures
from retrieval.index import GalleryIndex
from retrieval.projection import umap_available
from retrieval.run import RunConfig
from retrieval.safe_text import markdown_text, printable

POINT_COUNTS = (500, 1000, 2000, 5000, 10000, 20000)  # choices of "Points drawn" below the gallery's size
DEFAULT_POINTS = 2000
MAP_PICTURES = 150  # points drawn with their picture (spread evenly over the points drawn)
MAP_PICTURE_PX = 48  # the pictures' side as stored in the chart (drawn at 30 px)


def map_page(run_dir: Path, config: RunConfig) -> None:
    st.header("Embedding map")
    index = open_index(run_dir, "the embedding map")
    if index is None:
        return
    stamp = index_stamp(run_dir)
    methods = ["PCA"] + (["UMAP"] if umap_available() else [])
    controls = st.columns([1, 2, 1])
    method = controls[0].radio("Projection", methods, horizontal=True, key="map_method")
    with_pictures = controls[2].toggle("Pictures", value=True, key="map_pictures",
                                       help=f"Draw up to {MAP_PICTURES} points as their picture" + (" (the face)" if index.has_faces else ""))
    sizes = [s for s in POINT_COUNTS if s < len(index)] + [len(index)]
    max_points = len(index)
    if len(sizes) > 1:
        max_points = controls[1].select_slider("Points drawn", options=sizes, value=min(sizes, key=lambda s: abs(s - DEFAULT_POINTS)),
                                               key="map_points", help="Large galleries are drawn as a random sample.")
    if len(methods) == 1:
        st.caption("UMAP is offered when umap-learn is installed: `pip install 'retrieval[umap]'`.")
    fitted = projection(index, stamp, method.lower(), int(max_points))
    names = [printable(index.relative_paths[i]) + index.face_suffix(int(i)) for i in fitted.items]
    labels, colour_title, colour_note = map_colours(index, fitted.items)
    last = st.session_state.get("last_query")
    query_xy, query_name = None, "query"
    if last is not None and last.get("stamp") == stamp:
        query_xy = fitted.transform(last["vector"])[0]
        query_name = last["name"]
    pictures = map_pictures(index, fitted.items) if with_pictures else None
    st.altair_chart(figures.embedding_map(fitted.coords, labels, names, query=query_xy, query_name=query_name,
                                          colour_title=colour_title, pictures=pictures), width="stretch")
    shown = f"all {len(index)}" if len(fitted.items) == len(index) else f"{len(fitted.items)} of {len(index)} (drawn at random)"
    explained = ""
    if fitted.explained is not None:
        explained = f"; the axes hold {fitted.explained[0]:.0%} and {fitted.explained[1]:.0%} of the variance"
    query_text = (f" The black cross is the last query, {markdown_text(query_name)}." if query_xy is not None
                  else " Search on the Search page to place the query on the map.")
    what = "faces (each face of a photo a point; hover names the photo and the face)" if index.has_faces else "images"
    drawn = "" if pictures is None else (
        f" {sum(p is not None for p in pictures)} points are drawn as their {'face' if index.has_faces else 'image'}"
        f"{' (spread over the map)' if len(fitted.items) > MAP_PICTURES else ''}.")
    st.caption(f"{method} of the gallery embeddings: {shown} {what}{explained}.{drawn} Hover for the image name; "
               f"scroll to zoom, drag to pan.{query_text}")
    if colour_note:
        st.caption(colour_note)


def map_pictures(index: GalleryIndex, items) -> list[str | None]:
    """A picture URL for at most MAP_PICTURES of the drawn ``items``, evenly spaced over them (the
    sample is already random), None for the others: each item's image, or its face in a face gallery."""
    chosen = set(np.linspace(0, len(items) - 1, num=min(MAP_PICTURES, len(items)), dtype=int).tolist()) if len(items) else set()
    pictures: list[str | None] = []
    for position, item in enumerate(items):
        if position not in chosen:
            pictures.append(None)
            continue
        path, face = index.path(int(item)), index.face(int(item))
        box = None if face is None else tuple(float(v) for v in face["box"])
        pictures.append(picture_url(path_key(path), file_stamp(path), box, MAP_PICTURE_PX))
    return pictures


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
        return ([printable(f.name if short else f) for f in folders], "folder",
                ":material/info: The gallery has no class labels, so the points are coloured by the folder they come from.")
    return None, "", ":material/info: The gallery has no class labels (one flat folder), so the points are not coloured."


if __name__ == "__main__":  # run as a page by st.navigation (which names it __main__), not on import
    map_page(*chosen_run())
