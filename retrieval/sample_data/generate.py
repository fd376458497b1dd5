"""Writing the sample data set: the folder layout, the manifest, and regeneration only when needed.

Layout (torchvision ImageFolder style)::

    OUT/train/<class>/<class>-000.png ...     photos of the training classes
    OUT/test/<class>/<class>-000.png ...      photos of held-out classes (disjoint from train)
    OUT/catalog/<class>/<class>-catalog.png   one clean render for every class, train and test
    OUT/sample_data.json                      manifest: generator version, seed, sizes, files

Each photo has its own random stream, seeded by (seed, split, class, image), so changing one size
never changes the other images. Generation writes into a temporary sibling folder and renames it
into place, so an interrupted run never leaves a mix of old and new files, and it never deletes a
file the generator did not write.

Public names: :func:`generate_sample_data`, :func:`read_manifest`, and the constants of the
manifest and of the default sizes.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from retrieval.errors import RetrievalError
from retrieval.sample_data.photos import render_catalog, render_photo
from retrieval.sample_data.products import MAX_CLASSES, render_product, split_specs

GENERATOR = "retrieval.sample_data"
#: Bump whenever the drawing changes, so that `make demo` regenerates an old folder.
GENERATOR_VERSION = 2
MANIFEST_NAME = "sample_data.json"
SPLITS = ("train", "test", "catalog")

DEFAULT_TRAIN_CLASSES = 24
DEFAULT_TEST_CLASSES = 12
DEFAULT_IMAGES_PER_CLASS = 20
DEFAULT_IMAGE_SIZE = 64

_SPLIT_CODES = {"train": 1, "test": 2}  # the split's part of an image's seed


def _image_rng(seed: int, split: str, class_index: int, image_index: int) -> np.random.Generator:
    """An independent stream per image: changing one size never changes the other images."""
    return np.random.default_rng([seed, _SPLIT_CODES[split], class_index, image_index])


def _params(n_train_classes: int, n_test_classes: int, images_per_class: int, image_size: int) -> dict:
    return {
        "n_train_classes": n_train_classes,
        "n_test_classes": n_test_classes,
        "images_per_class": images_per_class,
        "image_size": image_size,
    }


def _check_params(seed: int, params: dict) -> None:
    if not isinstance(seed, int) or seed < 0:
        raise RetrievalError(f"--seed must be a non-negative integer, not {seed!r}")
    if params["n_train_classes"] < 1 or params["n_test_classes"] < 1:
        raise RetrievalError("the sample data needs at least one train class and one test class")
    total = params["n_train_classes"] + params["n_test_classes"]
    if total > MAX_CLASSES:
        raise RetrievalError(f"the sample data has at most {MAX_CLASSES} classes in all, not {total}")
    if params["images_per_class"] < 2:
        raise RetrievalError("images per class must be at least 2 (retrieval needs a second photo of a class)")
    if not 16 <= params["image_size"] <= 512:
        raise RetrievalError(f"image size must be between 16 and 512 pixels, not {params['image_size']}")


def read_manifest(out_dir: Path) -> dict | None:
    """The manifest of a sample-data folder, or None when there is none (or it is not ours)."""
    try:
        manifest = json.loads((Path(out_dir) / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("generator") != GENERATOR:
        return None
    return manifest


def _foreign_files(out_dir: Path, manifest: dict) -> list[str]:
    """Files under ``out_dir`` that the manifest does not list (a user's own files)."""
    files = manifest.get("files")
    known = (set(files) if isinstance(files, dict) else set()) | {MANIFEST_NAME}
    foreign = []
    for path in sorted(out_dir.rglob("*")):
        if not path.is_dir() and path.relative_to(out_dir).as_posix() not in known:
            foreign.append(path.relative_to(out_dir).as_posix())
    return foreign


def _is_up_to_date(out_dir: Path, manifest: dict, seed: int, params: dict) -> bool:
    if manifest.get("version") != GENERATOR_VERSION or manifest.get("seed") != seed or manifest.get("params") != params:
        return False
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        return False
    for relative, size in files.items():
        try:
            if (out_dir / relative).stat().st_size != size:
                return False
        except OSError:
            return False
    return not _foreign_files(out_dir, manifest)


def _summary(out_dir: Path, manifest: dict, seconds: float, skipped: bool) -> dict:
    return {
        "out_dir": str(out_dir),
        "seed": manifest["seed"],
        "version": manifest["version"],
        **manifest["params"],
        **manifest["counts"],
        "seconds": round(seconds, 3),
        "skipped": skipped,
    }


def _write(root: Path, seed: int, params: dict) -> dict:
    """Write every image and the manifest under ``root`` (an empty folder); returns the manifest."""
    size = params["image_size"]
    train, test = split_specs(params["n_train_classes"], params["n_test_classes"])
    files: dict[str, int] = {}

    def save(image: Image.Image, relative: str) -> None:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, format="PNG", compress_level=6)
        files[relative] = path.stat().st_size

    for class_index, spec in enumerate(train + test):
        split = "train" if class_index < len(train) else "test"
        sprite = render_product(spec, 2 * size)
        for image_index in range(params["images_per_class"]):
            photo = render_photo(sprite, size, _image_rng(seed, split, class_index, image_index))
            save(photo, f"{split}/{spec.name}/{spec.name}-{image_index:03d}.png")
        save(render_catalog(sprite, size), f"catalog/{spec.name}/{spec.name}-catalog.png")
    manifest = {
        "generator": GENERATOR,
        "version": GENERATOR_VERSION,
        "seed": seed,
        "params": params,
        "classes": {"train": [s.name for s in train], "test": [s.name for s in test]},
        "products": {
            s.name: {"shape": s.shape, "colour": s.colour, "logo": s.logo, "trim": s.trim, "group": s.group}
            for s in train + test
        },
        "counts": {
            "n_train_images": len(train) * params["images_per_class"],
            "n_test_images": len(test) * params["images_per_class"],
            "n_catalog_images": len(train) + len(test),
        },
        "files": files,
    }
    text = json.dumps(manifest, indent=1, sort_keys=True) + "\n"
    (root / MANIFEST_NAME).write_text(text, encoding="utf-8")
    return manifest


def generate_sample_data(
    out_dir: Path,
    *,
    seed: int = 0,
    n_train_classes: int = DEFAULT_TRAIN_CLASSES,
    n_test_classes: int = DEFAULT_TEST_CLASSES,
    images_per_class: int = DEFAULT_IMAGES_PER_CLASS,
    image_size: int = DEFAULT_IMAGE_SIZE,
    force: bool = False,
) -> dict:
    """Generate the sample data set into ``out_dir`` and return a summary.

    The summary holds ``out_dir``, ``seed``, ``version``, the four sizes, ``n_train_images``,
    ``n_test_images``, ``n_catalog_images``, ``seconds`` and ``skipped``.

    When ``out_dir`` already holds this generator version's output for the same seed and sizes
    (its manifest says so and every listed file is there with its size), nothing is written and
    ``skipped`` is True, unless ``force``. An older or different sample-data output is replaced.
    A folder that is non-empty and not sample data, or that holds files the generator did not
    write, is refused with :class:`RetrievalError` (nothing of the user's is ever deleted).
    The new data is written into a temporary sibling folder and renamed into place.
    """
    start = time.perf_counter()
    out_dir = Path(out_dir)
    params = _params(int(n_train_classes), int(n_test_classes), int(images_per_class), int(image_size))
    _check_params(seed, params)
    if out_dir.exists() and not out_dir.is_dir():
        raise RetrievalError(f"{out_dir} is a file, not a folder: choose another place for the sample data")
    previous = None
    if out_dir.is_dir() and any(out_dir.iterdir()):
        previous = read_manifest(out_dir)
        if previous is None:
            raise RetrievalError(
                f"{out_dir} is not empty and does not hold sample data from `retrieval sample-data` "
                f"(no {MANIFEST_NAME}); choose another folder or empty it"
            )
        if not force and _is_up_to_date(out_dir, previous, seed, params):
            return _summary(out_dir, previous, time.perf_counter() - start, skipped=True)
        foreign = _foreign_files(out_dir, previous)
        if foreign:
            shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise RetrievalError(
                f"{out_dir} holds files that `retrieval sample-data` did not write ({shown}); "
                "move them away or choose another folder"
            )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        manifest = _write(staging, seed, params)
        if out_dir.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
            os.rmdir(retired)
            os.replace(out_dir, retired)
            try:
                os.replace(staging, out_dir)
            except OSError:
                os.replace(retired, out_dir)
                raise
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, out_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return _summary(out_dir, manifest, time.perf_counter() - start, skipped=False)
