"""Searching a face run's gallery: every face of the query photo is a query of its own.

:func:`search_faces` detects and aligns the query's faces with the run's pipeline (an upload or a
decoded image is never cached: a query's face does not stay in the run), searches the gallery
with each aligned crop and gives one :class:`FaceResult` a face, most confident first: its box
and score, the neighbours (gallery faces) and the open-set verdict at the run's τ. No face: [].
``retrieval search --json`` prints ``{"faces": [result.to_json(gallery), ...]}`` (DESIGN.md's CLI
contract), each neighbour record being the non-face one with the gallery face's ``box`` added.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from retrieval.faces.pipeline import AlignedFace, FacePipeline, ImageInput

__all__ = ["FaceResult", "face_tables", "search_aligned_faces", "search_faces"]


@dataclass
class FaceResult:
    """One face of a query photo and what the gallery answered for it."""

    face: AlignedFace
    neighbours: list[Any]  # retrieval.index.Neighbour, nearest first
    verdict: Any  # retrieval.verification's open-set verdict
    vector: Any = None  # the face's unit embedding (D,), as searched

    def to_json(self, gallery: Any) -> dict[str, Any]:
        """``{"box", "score", "neighbours": [...], "verdict": {...}}``; each neighbour's record
        with its face's ``box`` in its photo and ``face``, its rank there (from 0, as gallery.json)."""
        neighbours = []
        for n in self.neighbours:
            record = gallery.face(n.item) if hasattr(gallery, "face") else None
            neighbours.append({**n.to_json(), "box": None if record is None else record["box"],
                               "face": None if record is None else int(record.get("face", 0))})
        return {"box": [round(float(v), 2) for v in self.face.box], "score": round(float(self.face.score), 5),
                "neighbours": neighbours, "verdict": self.verdict.to_json()}


def search_faces(gallery: Any, pipeline: FacePipeline, image: ImageInput, k: int = 10, **options: Any) -> list[FaceResult]:
    """Every face of ``image`` searched in ``gallery`` (a :class:`~retrieval.index.GalleryIndex`;
    ``options`` go to its ``search``), most confident face first; [] when no face is found."""
    return search_aligned_faces(gallery, pipeline.faces(image), k, **options)


def search_aligned_faces(gallery: Any, faces: list[AlignedFace], k: int = 10, **options: Any) -> list[FaceResult]:
    """Each of ``faces`` (a pipeline's aligned faces of one photo, in its order) embedded and
    searched in ``gallery``: the second half of :func:`search_faces`, for a caller that detects
    and embeds under different settings (the app: the photo on torch's threads, each crop on one)."""
    results = []
    for face in faces:
        vector = gallery.embed(face.crop)
        neighbours = gallery.search(vector, k, **options)
        results.append(FaceResult(face, neighbours, gallery.verdict(neighbours), vector))
    return results


def face_tables(results: list[FaceResult], gallery: Any, image: Any) -> list[tuple[str, Any, str]]:
    """``retrieval search``'s table output on a face run, as the whole-image table gives it: per face
    a heading line (which face of the photo, its box and score), a rich Table of its neighbours
    (photo path, relative to the gallery folder or the one holding them all: ``GalleryIndex.shown_path``; which face of it and its box;
    label, distance, cosine similarity, and with a threshold τ whether it is a match) and its verdict line."""
    from rich.table import Table

    from retrieval.safe_text import terminal_text

    target = gallery.threshold.target_far if gallery.threshold is not None else None
    root = gallery.shown_root
    columns = [("#", "right"), ("path", "left"), ("face", "left"), ("label", "left"), ("distance", "right"), ("similarity", "right")]
    if gallery.threshold is not None:
        columns.append(("match", "left"))
    shown = []
    for number, result in enumerate(results, 1):
        box = ", ".join(f"{v:.0f}" for v in result.face.box)
        heading = f"face {number} of {len(results)} in {image} (box {box}, score {result.face.score:.3f})"
        table = Table(caption=terminal_text(f"paths relative to {root}") if root is not None else None)
        for column, justify in columns:
            table.add_column(column, justify=justify, overflow="fold")
        for rank, n in enumerate(result.neighbours, 1):
            record = gallery.face(n.item) or {}
            where = f"{int(record.get('face', 0)) + 1} ({', '.join(f'{v:.0f}' for v in record.get('box', []))})"
            table.add_row(str(rank), terminal_text(gallery.shown_path(n.item)), where, terminal_text("-" if n.label is None else n.label),
                          f"{n.distance:.4f}", f"{n.similarity:.4f}", *(["yes" if n.match else "no"] if gallery.threshold is not None else []))
        first = result.neighbours[0] if result.neighbours else None
        nearest = None if first is None else f"{gallery.shown_path(first.item)}{gallery.face_suffix(first.item)}"
        shown.append((heading, table, result.verdict.describe(target, nearest=nearest, run_dir=str(gallery.run_dir))))
    return shown
