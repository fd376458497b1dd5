"""The project's own small labelled data set: drawn products, "photographed" under nuisance variation.

Every class is one product: a shape (``box``, ``bottle``, ``can``), a body colour and a logo
(a geometric shape or a letter), with label stripes in a trim colour. Each class is photographed
``images_per_class`` times under varied pose (rotation, perspective), scale, crop, position,
lighting (brightness, contrast, colour cast, gradient, gamma), background (smooth texture,
tablecloth pattern, clutter of random shapes and distractor logos), drop shadow, blur, sensor noise
and partial occlusion; and rendered once, clean and frontal on white, as its catalogue image.

Classes come in groups of six that are built to be confusable, so that a model has to learn the
product and ignore the nuisance: within a group, a box and a bottle share a colour and a logo
pair, and a can of the neighbouring (similar) colour uses the same logo pair; so some classes
differ only in logo, some only in shape, some only in a similar colour. Background and lighting
dominate raw-pixel distance, so an untrained model retrieves poorly.

Layout (torchvision ImageFolder style)::

    OUT/train/<class>/<class>-000.png ...     photos of the training classes
    OUT/test/<class>/<class>-000.png ...      photos of held-out classes (disjoint from train)
    OUT/catalog/<class>/<class>-catalog.png   one clean render for every class, train and test
    OUT/sample_data.json                      manifest: generator version, seed, sizes, files

Everything is a deterministic function of the seed (numpy ``Generator`` per image, Pillow
drawing): the same seed and sizes give byte-identical files with the same numpy / Pillow. The
class list does not depend on the seed; the photos do. Generation writes into a temporary sibling
folder and renames it into place, so an interrupted run never leaves a mix of old and new files.

The parts, in the order the data flows:

- :mod:`~retrieval.sample_data.products`: the classes (:class:`ProductSpec`) and drawing a product.
- :mod:`~retrieval.sample_data.photos`: photographing it (:func:`render_photo`) and its
  catalogue image (:func:`render_catalog`).
- :mod:`~retrieval.sample_data.generate`: writing the folder and its manifest
  (:func:`generate_sample_data`, :func:`read_manifest`).
"""

from retrieval.sample_data.generate import (
    DEFAULT_IMAGE_SIZE,
    DEFAULT_IMAGES_PER_CLASS,
    DEFAULT_TEST_CLASSES,
    DEFAULT_TRAIN_CLASSES,
    GENERATOR,
    GENERATOR_VERSION,
    MANIFEST_NAME,
    SPLITS,
    generate_sample_data,
    read_manifest,
)
from retrieval.sample_data.photos import MUTED, NUISANCE, render_catalog, render_photo
from retrieval.sample_data.products import (
    COLOURS,
    LOGOS,
    MAX_CLASSES,
    SHAPES,
    TRIMS,
    ProductSpec,
    draw_logo,
    product_specs,
    render_product,
    split_specs,
)

__all__ = [
    "generate_sample_data",
    "read_manifest",
    "GENERATOR",
    "GENERATOR_VERSION",
    "MANIFEST_NAME",
    "SPLITS",
    "DEFAULT_TRAIN_CLASSES",
    "DEFAULT_TEST_CLASSES",
    "DEFAULT_IMAGES_PER_CLASS",
    "DEFAULT_IMAGE_SIZE",
    "render_photo",
    "render_catalog",
    "NUISANCE",
    "MUTED",
    "ProductSpec",
    "product_specs",
    "split_specs",
    "render_product",
    "draw_logo",
    "MAX_CLASSES",
    "SHAPES",
    "COLOURS",
    "LOGOS",
    "TRIMS",
]
