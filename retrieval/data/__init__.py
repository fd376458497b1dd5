"""Images in, batches out: the only package (with the model) that knows about image files.

A labelled folder ``DATA_DIR/<class>/<image>`` is scanned once into an :class:`ImageFolder`
(paths, class labels, and what was skipped and why; a flat folder scans as an unlabelled gallery,
labels -1) by :mod:`~retrieval.data.scan`, which checks each file through
:mod:`~retrieval.data.images`, the one place where an image file becomes an RGB picture
(:func:`load_image`: EXIF orientation applied, greyscale / palette / alpha / 16-bit converted
properly, decompression bombs refused). :mod:`~retrieval.data.split` divides the classes into
training and validation classes (:func:`split_classes`: the unseen-class protocol of metric
learning); :mod:`~retrieval.data.side_files` reads the optional CSV files of class groups and
never-negative pairs. :mod:`~retrieval.data.sampler`'s :class:`PKSampler` fills every batch with P
classes times K images, so that every anchor has positives and negatives in its batch;
:mod:`~retrieval.data.transforms` gives the albumentations train / eval pipelines normalised with
the backbone's pretrained config; :mod:`~retrieval.data.loading`'s :class:`ImageDataset` and
:func:`make_loader` feed them to the model. Every name below is importable from here
(``from retrieval import data; data.scan_folder(...)``).
"""

# MAX_IMAGE_PIXELS and MAX_QUERY_PIXELS are read where images are decoded: to change a limit, set
# retrieval.data.images.MAX_IMAGE_PIXELS (or MAX_QUERY_PIXELS; setting this package's copy has no effect).
from retrieval.data.images import MAX_IMAGE_PIXELS, MAX_QUERY_PIXELS, all_greyscale, load_image, load_image_bytes
from retrieval.data.scan import (
    IMAGE_EXTENSIONS,
    SPLIT_FOLDER_NAMES,
    ImageFolder,
    brief_list,
    require_trainable,
    scan_folder,
)
from retrieval.data.split import split_classes
from retrieval.data.side_files import (
    bad_rows_error,
    class_group_ids,
    csv_path_key,
    image_lookup,
    normalise_column,
    read_class_groups,
    read_class_pairs,
    read_csv_rows,
    shown_field,
)
from retrieval.data.sampler import PKSampler
from retrieval.data.transforms import (
    BatchNormalise,
    ImageTransform,
    build_transforms,
    cv2_interpolation,
    finish_pipeline,
)
from retrieval.data.loading import ImageDataset, collate_images, default_num_workers, make_loader

__all__ = [
    "IMAGE_EXTENSIONS",
    "MAX_IMAGE_PIXELS",
    "MAX_QUERY_PIXELS",
    "SPLIT_FOLDER_NAMES",
    "ImageFolder",
    "scan_folder",
    "require_trainable",
    "brief_list",
    "all_greyscale",
    "load_image",
    "load_image_bytes",
    "split_classes",
    "read_class_groups",
    "read_class_pairs",
    "class_group_ids",
    "read_csv_rows",
    "shown_field",
    "bad_rows_error",
    "csv_path_key",
    "image_lookup",
    "normalise_column",
    "PKSampler",
    "build_transforms",
    "finish_pipeline",
    "cv2_interpolation",
    "ImageTransform",
    "BatchNormalise",
    "ImageDataset",
    "collate_images",
    "make_loader",
    "default_num_workers",
]
