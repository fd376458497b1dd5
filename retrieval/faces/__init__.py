"""Faces: find every face in a photo, align it, crop it, and cache the work by file content.

A face run (``retrieval train --faces``) never embeds a raw photo: it embeds aligned faces. This
package is that step. :mod:`~retrieval.faces.detect` finds faces with MTCNN (``facenet-pytorch``,
weights inside the wheel, nothing downloaded): a box, a score and five landmarks each.
:mod:`~retrieval.faces.align` maps the landmarks onto the ArcFace five-point template with a
least-squares similarity transform (Umeyama) and warps the face to 112 × 112, then to the run's
image size. :mod:`~retrieval.faces.cache` keeps detections and crops by the file's SHA-256 and the
detector settings, inside the run or index folder only (face crops are personal data and go with
it). :class:`FacePipeline` ties them together and is what training, indexing, search and the app
call: ``FacePipeline.from_settings_json(config["faces"], cache_dir=run_dir / "faces")``, then
``pipeline.faces(path)`` (every face, most confident first) or ``pipeline.best_face(path)``.
"""

from retrieval.faces.align import TEMPLATE, TEMPLATE_NAME, TEMPLATE_SIZE, align_face, similarity_transform, \
    warp_to_template
from retrieval.faces.cache import FaceCache
from retrieval.faces.detect import DETECTOR_NAME, Detection, DetectorSettings, MTCNNDetector, by_confidence, \
    most_confident
from retrieval.faces.pipeline import AlignedFace, FacePipeline, ImageInput

__all__ = [
    "DETECTOR_NAME", "TEMPLATE", "TEMPLATE_NAME", "TEMPLATE_SIZE", "AlignedFace", "Detection", "DetectorSettings",
    "FaceCache", "FacePipeline", "ImageInput", "MTCNNDetector", "align_face", "by_confidence", "most_confident",
    "similarity_transform", "warp_to_template",
]
