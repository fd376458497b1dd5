"""Shared pieces of the faces tests: the real data sets, one MTCNN for all, a detector that counts."""

from __future__ import annotations

import csv
import functools
from pathlib import Path

import pytest

from retrieval.faces import MTCNNDetector

DATASETS = Path(__file__).resolve().parents[2].parent / "shared" / "datasets"
ATT_CROPS = DATASETS / "att_faces" / "test" / "s31"
SCENES = DATASETS / "att_faces_scenes"


def dataset(path: Path) -> Path:
    """``path`` under ../shared/datasets, or a skip that names it (shown by pytest -ra)."""
    if not path.exists():
        pytest.skip(f"real data set not present: {path} (../shared/datasets beside the checkout)")
    return path


@functools.lru_cache(maxsize=1)
def shared_detector() -> MTCNNDetector:
    """One MTCNN with the default settings for every test (loading it is the slow part)."""
    return MTCNNDetector()


def pairs_rows() -> list[dict[str, str]]:
    """pairs.csv as dicts (file, left_person, ..., left_box, right_box)."""
    with open(dataset(SCENES / "pairs.csv"), newline="") as handle:
        return list(csv.DictReader(handle))


def rectangle(text: str) -> tuple[float, float, float, float]:
    """A pairs.csv rectangle "x0 y0 x1 y1"."""
    x0, y0, x1, y1 = (float(v) for v in text.split())
    return x0, y0, x1, y1


def centre(box) -> tuple[float, float]:
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


def inside(point, rect) -> bool:
    return rect[0] <= point[0] <= rect[2] and rect[1] <= point[1] <= rect[3]


class CountingDetector:
    """Wraps a detector and counts the images it was asked to detect faces in."""

    def __init__(self, detector: MTCNNDetector | None = None) -> None:
        self.detector = detector if detector is not None else shared_detector()
        self.settings = self.detector.settings
        self.images = 0

    def detect_many(self, images):
        self.images += len(images)
        return self.detector.detect_many(images)


ATT_TRAIN = DATASETS / "att_faces" / "train"


def make_face_folder(root: Path, n_classes: int = 4, per_class: int = 3, no_face: int = 1) -> Path:
    """A labelled folder of real face crops (att_faces/train) and ``no_face`` grey images without a face."""
    import shutil

    import numpy as np
    from PIL import Image

    source = dataset(ATT_TRAIN)
    for person in sorted(p for p in source.iterdir() if p.is_dir())[:n_classes]:
        (root / person.name).mkdir(parents=True)
        for k in range(1, per_class + 1):
            shutil.copy(person / f"{k}.png", root / person.name / f"{k}.png")
    rng = np.random.default_rng(0)
    first = sorted(p for p in root.iterdir())[0]
    for k in range(no_face):
        flat = np.full((112, 92, 3), 128, np.uint8) + rng.integers(0, 8, (112, 92, 3), dtype=np.uint8)
        Image.fromarray(flat).save(first / f"blank{k}.png")
    return root


def make_face_run(root: Path, n_classes: int = 5, per_class: int = 3, epochs: int = 0) -> Path:
    """A real face run (``--faces``, tiny random-init model, ``epochs`` (0: untrained)) trained on att_faces crops."""
    from retrieval.training import TrainConfig, train

    tiny = dict(backbone="resnet10t", embedding_dim=16, image_size=32, classes_per_batch=2, images_per_class=2,
                num_workers=0, precision="fp32", hardest_per_epoch=10, val_fraction=0.25)
    data_dir = make_face_folder(root / "train_data", n_classes=n_classes, per_class=per_class, no_face=0)
    train(TrainConfig(data_dir=data_dir, out=root / "run", epochs=epochs, faces=True, **tiny), progress=False)
    return root / "run"
