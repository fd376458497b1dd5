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
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from retrieval.errors import RetrievalError

GENERATOR = "retrieval.sample_data"
#: Bump whenever the drawing changes, so that `make demo` regenerates an old folder.
GENERATOR_VERSION = 2
MANIFEST_NAME = "sample_data.json"
SPLITS = ("train", "test", "catalog")

DEFAULT_TRAIN_CLASSES = 24
DEFAULT_TEST_CLASSES = 12
DEFAULT_IMAGES_PER_CLASS = 20
DEFAULT_IMAGE_SIZE = 64

SHAPES = ("box", "bottle", "can")
# Ordered so that neighbours are similar hues: a group's can takes the next colour.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (200, 40, 45),
    "orange": (235, 125, 35),
    "yellow": (232, 200, 45),
    "green": (60, 150, 65),
    "teal": (35, 150, 150),
    "blue": (45, 85, 195),
    "purple": (125, 65, 175),
    "pink": (230, 115, 170),
}
# Consecutive pairs are the logo pairs of a group: (star, ring), (triangle, diamond), ...
LOGOS = (
    "star",
    "ring",
    "triangle",
    "diamond",
    "cross",
    "heart",
    "letter-a",
    "letter-h",
    "letter-k",
    "letter-z",
)
TRIMS: dict[str, tuple[int, int, int]] = {
    "white": (245, 245, 240),
    "black": (30, 30, 35),
    "gold": (212, 175, 60),
    "silver": (175, 180, 192),
}
_N_GROUPS = math.lcm(len(COLOURS), len(LOGOS) // 2)  # the group pattern repeats after this
MUTED = 0.3  # backgrounds are less saturated than products, as in real shelf photos
#: How strong the nuisance is (tuned so raw pixels fail and a model learns in ~90 s of CPU).
NUISANCE = {
    "scale": (0.55, 0.95),  # the product's longest side, as a fraction of the frame
    "rotation_sd": 14.0,  # degrees, clipped to +-35
    "perspective": 0.09,  # corner jitter, as a fraction of the product size
    "background_p": (0.3, 0.3, 0.4),  # texture, tablecloth pattern, clutter
    "clutter_items": (12, 35),
    "occlusion_p": 0.35,
    "crop_min": 0.8,  # the kept fraction of the frame in a random crop
    "blur_p": 0.4,
}
_SPLIT_CODES = {"train": 1, "test": 2}
_RESAMPLE = Image.Resampling


@dataclass(frozen=True)
class ProductSpec:
    """One class: what its product looks like."""

    name: str
    shape: str
    colour: str
    logo: str
    trim: str
    group: int


def _group(group: int) -> list[ProductSpec]:
    """The six products of one group, built to be confusable.

    With A a colour, B its neighbour (a similar hue) and x, y, z three logos::

        box-A-x     box-A-y       differ only in logo
        bottle-A-x  bottle-B-x    differ only in colour (similar hues)
        can-B-y     can-A-z       differ in colour and logo
        box-A-x     bottle-A-x    differ only in shape
    """
    colours, trims = list(COLOURS), list(TRIMS)
    a, b = colours[group % len(colours)], colours[(group + 1) % len(colours)]
    pair = group % (len(LOGOS) // 2)
    x, y, z = LOGOS[2 * pair], LOGOS[2 * pair + 1], LOGOS[(2 * pair + 3) % len(LOGOS)]
    layout = [("box", a, x), ("box", a, y), ("bottle", a, x), ("bottle", b, x), ("can", b, y), ("can", a, z)]
    return [
        ProductSpec(f"{shape}-{colour}-{logo}", shape, colour, logo, trims[(group + SHAPES.index(shape)) % len(trims)], group)
        for shape, colour, logo in layout
    ]


def _all_specs() -> list[ProductSpec]:
    seen: set[str] = set()
    specs = []
    for group in range(_N_GROUPS):
        for spec in _group(group):
            if spec.name not in seen:
                seen.add(spec.name)
                specs.append(spec)
    return specs


_ALL_SPECS = _all_specs()
MAX_CLASSES = len(_ALL_SPECS)


def product_specs(n_classes: int) -> list[ProductSpec]:
    """The first ``n_classes`` products, in a fixed (seed-independent) order of confusable groups."""
    if not 0 <= n_classes <= MAX_CLASSES:
        raise RetrievalError(f"the sample data has at most {MAX_CLASSES} classes, not {n_classes}")
    return _ALL_SPECS[:n_classes]


def split_specs(n_train: int, n_test: int) -> tuple[list[ProductSpec], list[ProductSpec]]:
    """Train and test classes: every third group is held out, so both splits hold confusable sets."""
    train: list[ProductSpec] = []
    test: list[ProductSpec] = []
    for spec in product_specs(n_train + n_test):
        wants_test = spec.group % 3 == 2
        if (wants_test and len(test) < n_test) or len(train) >= n_train:
            test.append(spec)
        else:
            train.append(spec)
    return train, test


# --------------------------------------------------------------------------------------------
# Drawing: logos, products, backgrounds


def _mix(colour, other, t: float) -> tuple[int, int, int]:
    return tuple(int(round(a * (1 - t) + b * t)) for a, b in zip(colour, other))


def _scale(colour, factor: float) -> tuple[int, int, int]:
    return tuple(int(min(255, max(0, round(c * factor)))) for c in colour)


def _luminance(colour) -> float:
    r, g, b = colour
    return 0.299 * r + 0.587 * g + 0.114 * b


def _polygon(cx: float, cy: float, r: float, angles_radii) -> list[tuple[float, float]]:
    return [
        (cx + r * k * math.cos(math.radians(a)), cy + r * k * math.sin(math.radians(a)))
        for a, k in angles_radii
    ]


_GLYPHS: dict[str, list[list[tuple[float, float]]]] = {
    "letter-a": [[(-0.7, 1.0), (0.0, -1.0), (0.7, 1.0)], [(-0.4, 0.3), (0.4, 0.3)]],
    "letter-h": [[(-0.6, -1.0), (-0.6, 1.0)], [(0.6, -1.0), (0.6, 1.0)], [(-0.6, 0.0), (0.6, 0.0)]],
    "letter-k": [[(-0.55, -1.0), (-0.55, 1.0)], [(0.6, -1.0), (-0.5, 0.1)], [(-0.15, -0.25), (0.65, 1.0)]],
    "letter-z": [[(-0.6, -1.0), (0.6, -1.0), (-0.6, 1.0), (0.6, 1.0)]],
}


def draw_logo(draw: ImageDraw.ImageDraw, logo: str, cx: float, cy: float, r: float, fill) -> None:
    """Draw ``logo`` centred on (cx, cy) inside a circle of radius ``r``.

    ``fill`` is the ink; ring, heart and letters need no background colour, so this works on
    any image mode (an "L" mask with fill 255 included).
    """
    if logo == "star":
        draw.polygon(_polygon(cx, cy, r, [(-90 + 36 * i, 1.0 if i % 2 == 0 else 0.45) for i in range(10)]), fill=fill)
    elif logo == "ring":
        width = max(1, int(round(0.38 * r)))
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=fill, width=width)
    elif logo == "triangle":
        draw.polygon(_polygon(cx, cy + 0.15 * r, 1.1 * r, [(-90, 1), (30, 1), (150, 1)]), fill=fill)
    elif logo == "diamond":
        draw.polygon([(cx, cy - r), (cx + 0.72 * r, cy), (cx, cy + r), (cx - 0.72 * r, cy)], fill=fill)
    elif logo == "cross":
        t = 0.32 * r
        draw.rectangle((cx - t, cy - r, cx + t, cy + r), fill=fill)
        draw.rectangle((cx - r, cy - t, cx + r, cy + t), fill=fill)
    elif logo == "heart":
        lobe = 0.52 * r
        for dx in (-0.46 * r, 0.46 * r):
            draw.ellipse((cx + dx - lobe, cy - 0.35 * r - lobe, cx + dx + lobe, cy - 0.35 * r + lobe), fill=fill)
        draw.polygon([(cx - 0.95 * r, cy - 0.2 * r), (cx + 0.95 * r, cy - 0.2 * r), (cx, cy + r)], fill=fill)
    elif logo in _GLYPHS:
        width = max(1, int(round(0.34 * r)))
        for stroke in _GLYPHS[logo]:
            points = [(cx + 0.85 * r * x, cy + 0.9 * r * y) for x, y in stroke]
            draw.line(points, fill=fill, width=width, joint="curve")
    else:  # pragma: no cover - LOGOS is closed
        raise ValueError(f"unknown logo {logo!r}")


def render_product(spec: ProductSpec, size: int) -> Image.Image:
    """The product on a transparent ``size`` x ``size`` RGBA canvas, frontal, filling its height."""
    image = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    s = float(size)
    body = COLOURS[spec.colour]
    trim = TRIMS[spec.trim]
    ink = (250, 250, 250) if _luminance(body) < 150 else (25, 25, 30)
    if spec.shape == "box":
        x0, x1, y0, y1, depth = 0.12 * s, 0.70 * s, 0.20 * s, 0.97 * s, 0.14 * s
        draw.polygon([(x0, y0), (x1, y0), (x1 + depth, y0 - depth), (x0 + depth, y0 - depth)], fill=_mix(body, (255, 255, 255), 0.35))
        draw.polygon([(x1, y0), (x1 + depth, y0 - depth), (x1 + depth, y1 - depth), (x1, y1)], fill=_scale(body, 0.6))
        draw.rectangle((x0, y0, x1, y1), fill=body)
        for top, bottom in ((0.09, 0.15), (0.90, 0.95)):
            ya, yb = y0 + top * (y1 - y0), y0 + bottom * (y1 - y0)
            draw.rectangle((x0, ya, x1, yb), fill=trim)
            draw.polygon([(x1, ya), (x1 + depth, ya - depth), (x1 + depth, yb - depth), (x1, yb)], fill=_scale(trim, 0.6))
        cx, cy, r = (x0 + x1) / 2, y0 + 0.53 * (y1 - y0), 0.4 * (x1 - x0)
    elif spec.shape == "bottle":
        x0, x1 = 0.27 * s, 0.73 * s
        draw.rounded_rectangle((x0, 0.38 * s, x1, 0.98 * s), radius=int(0.08 * s), fill=body)
        draw.polygon([(x0, 0.46 * s), (0.41 * s, 0.25 * s), (0.59 * s, 0.25 * s), (x1, 0.46 * s)], fill=body)
        draw.ellipse((x0, 0.34 * s, x1, 0.58 * s), fill=body)
        draw.rectangle((0.41 * s, 0.12 * s, 0.59 * s, 0.28 * s), fill=body)
        draw.rectangle((0.39 * s, 0.02 * s, 0.61 * s, 0.13 * s), fill=trim)
        label = (245, 240, 225)
        draw.rectangle((x0, 0.52 * s, x1, 0.93 * s), fill=label)
        draw.rectangle((x0, 0.52 * s, x1, 0.545 * s), fill=trim)
        draw.rectangle((x0, 0.905 * s, x1, 0.93 * s), fill=trim)
        draw.rectangle((0.44 * s, 0.16 * s, 0.56 * s, 0.19 * s), fill=trim)
        cx, cy, r = s / 2, 0.725 * s, 0.17 * s
        ink = _scale(body, 0.8)
    else:  # can
        x0, x1 = 0.24 * s, 0.76 * s
        draw.rectangle((x0, 0.10 * s, x1, 0.93 * s), fill=body)
        draw.ellipse((x0, 0.87 * s, x1, 0.99 * s), fill=_scale(body, 0.7))
        draw.rectangle((x0, 0.22 * s, x1, 0.30 * s), fill=trim)
        draw.rectangle((x0, 0.78 * s, x1, 0.84 * s), fill=trim)
        draw.ellipse((x0, 0.03 * s, x1, 0.17 * s), fill=(190, 192, 200))
        draw.ellipse((x0 + 0.05 * s, 0.05 * s, x1 - 0.05 * s, 0.15 * s), fill=(150, 152, 160))
        cx, cy, r = s / 2, 0.54 * s, 0.225 * s
    draw_logo(draw, spec.logo, cx, cy, r, ink)
    if spec.shape in ("bottle", "can"):  # a specular highlight band on the cylinder
        highlight = Image.new("RGBA", image.size, (0, 0, 0, 0))
        ImageDraw.Draw(highlight).rectangle((0.31 * s, 0.3 * s, 0.37 * s, 0.9 * s), fill=(255, 255, 255, 70))
        highlight.putalpha(Image.fromarray(np.minimum(np.asarray(highlight.getchannel("A")), np.asarray(image.getchannel("A")))))
        image = Image.alpha_composite(image, highlight)
    return image


def _random_colour(rng: np.random.Generator, muted: float = 0.0) -> tuple[int, int, int]:
    """A uniform random colour, mixed ``muted`` of the way to mid grey."""
    return _mix(tuple(int(v) for v in rng.integers(0, 256, size=3)), (128, 128, 128), muted)


def _smooth_noise(rng: np.random.Generator, size: int, cells: int, amplitude: float) -> np.ndarray:
    """Blotchy colour noise, (size, size, 3) float in roughly [-amplitude, amplitude]."""
    coarse = np.clip(rng.normal(0.0, 1.0, size=(cells, cells, 3)) * 40 + 128, 0, 255).astype(np.uint8)
    fine = np.asarray(Image.fromarray(coarse).resize((size, size), _RESAMPLE.BICUBIC), dtype=np.float32)
    return (fine - 128.0) * (amplitude / 40.0)


def _background_texture(rng: np.random.Generator, size: int) -> Image.Image:
    a, b = np.array(_random_colour(rng, MUTED), np.float32), np.array(_random_colour(rng, MUTED), np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) / size
    t = np.clip(0.5 + (xs - 0.5) * math.cos(angle) + (ys - 0.5) * math.sin(angle), 0, 1)[..., None]
    pixels = a * (1 - t) + b * t + _smooth_noise(rng, size, int(rng.integers(3, 17)), rng.uniform(10, 45))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _background_pattern(rng: np.random.Generator, size: int) -> Image.Image:
    """A tablecloth: stripes or checks of two colours at a random angle and period."""
    a, b = np.array(_random_colour(rng, MUTED), np.float32), np.array(_random_colour(rng, MUTED), np.float32)
    angle = rng.uniform(0, math.pi)
    period = rng.uniform(0.08, 0.35) * size
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    u = xs * math.cos(angle) + ys * math.sin(angle)
    mask = np.sin(2 * math.pi * u / period) > 0
    if rng.random() < 0.5:
        v = -xs * math.sin(angle) + ys * math.cos(angle)
        mask = mask ^ (np.sin(2 * math.pi * v / period) > 0)
    pixels = np.where(mask[..., None], a, b) + _smooth_noise(rng, size, 6, rng.uniform(5, 25))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _background_clutter(rng: np.random.Generator, size: int) -> Image.Image:
    """A cluttered scene: random rectangles, blobs, lines and distractor logos."""
    image = Image.new("RGB", (size, size), _random_colour(rng, MUTED))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(*NUISANCE["clutter_items"]))):
        kind = int(rng.integers(0, 5))
        cx, cy = rng.uniform(-0.1, 1.1, size=2) * size
        r = rng.uniform(0.04, 0.3) * size
        colour = _random_colour(rng, MUTED)
        if kind == 0:
            w, h = r * rng.uniform(0.4, 1.6, size=2)
            draw.rectangle((cx - w, cy - h, cx + w, cy + h), fill=colour)
        elif kind == 1:
            w, h = r * rng.uniform(0.4, 1.6, size=2)
            draw.ellipse((cx - w, cy - h, cx + w, cy + h), fill=colour)
        elif kind == 2:
            n = int(rng.integers(3, 7))
            draw.polygon([(cx + r * math.cos(t), cy + r * math.sin(t)) for t in np.sort(rng.uniform(0, 2 * math.pi, n))], fill=colour)
        elif kind == 3:
            end = rng.uniform(-0.1, 1.1, size=2) * size
            draw.line([(cx, cy), (float(end[0]), float(end[1]))], fill=colour, width=int(rng.integers(1, max(2, size // 12))))
        else:
            draw_logo(draw, LOGOS[int(rng.integers(0, len(LOGOS)))], cx, cy, r * 0.6, colour)
    if rng.random() < 0.7:
        image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.5, 2.5))))
    return image


_BACKGROUNDS: tuple[Callable[[np.random.Generator, int], Image.Image], ...] = (
    _background_texture,
    _background_pattern,
    _background_clutter,
)


def _perspective_coefficients(src: list[tuple[float, float]], dst: list[tuple[float, float]]) -> list[float]:
    """Coefficients for ``Image.transform(PERSPECTIVE)`` mapping output points ``dst`` to input ``src``."""
    rows, rhs = [], []
    for (x, y), (u, v) in zip(dst, src):
        rows.append([x, y, 1, 0, 0, 0, -x * u, -y * u])
        rows.append([0, 0, 0, x, y, 1, -x * v, -y * v])
        rhs.extend([u, v])
    return [float(c) for c in np.linalg.solve(np.array(rows, np.float64), np.array(rhs, np.float64))]


def _pose(sprite: Image.Image, rng: np.random.Generator, longest: float) -> Image.Image:
    """Scale, perspective tilt and in-plane rotation in one resampling; the product cropped to its pixels.

    ``longest`` is the side, in pixels, that the (square) sprite is scaled to before the tilt.
    """
    n = max(2, int(round(longest)))
    small = sprite.resize((n, n), _RESAMPLE.LANCZOS) if n != sprite.width else sprite
    corners = np.array([(0.0, 0.0), (n, 0.0), (n, n), (0.0, n)])
    moved = corners + rng.uniform(-1, 1, size=(4, 2)) * NUISANCE["perspective"] * n
    angle = math.radians(float(np.clip(rng.normal(0.0, NUISANCE["rotation_sd"]), -35.0, 35.0)))
    centred = moved - n / 2
    cos, sin = math.cos(angle), math.sin(angle)
    moved = np.stack([centred[:, 0] * cos + centred[:, 1] * sin, -centred[:, 0] * sin + centred[:, 1] * cos], axis=1)
    moved -= moved.min(axis=0)
    width, height = (int(math.ceil(v)) + 1 for v in moved.max(axis=0))
    coefficients = _perspective_coefficients([tuple(c) for c in corners], [tuple(c) for c in moved])
    posed = small.transform((width, height), Image.Transform.PERSPECTIVE, coefficients, _RESAMPLE.BICUBIC)
    box = posed.getchannel("A").point(lambda a: 255 if a > 8 else 0).getbbox()
    return posed.crop(box) if box else posed


def _light(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Brightness, contrast, colour cast, a directional light gradient and gamma, on [0, 1] floats."""
    size = pixels.shape[0]
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) / size * 2 - 1
    angle = rng.uniform(0, 2 * math.pi)
    ramp = 1 + rng.uniform(0.0, 0.35) * (xs * math.cos(angle) + ys * math.sin(angle))
    cast = 1 + rng.normal(0.0, 0.05, size=3)
    pixels = pixels * ramp[..., None] * cast * rng.uniform(0.65, 1.3)
    mean = pixels.mean()
    pixels = (pixels - mean) * rng.uniform(0.7, 1.25) + mean
    return np.clip(pixels, 0, 1) ** rng.uniform(0.8, 1.25)


def render_photo(sprite: Image.Image, image_size: int, rng: np.random.Generator) -> Image.Image:
    """One "photograph" of the product in ``sprite`` (RGBA from :func:`render_product`)."""
    canvas_size = 2 * image_size  # draw at twice the size, then downsample: anti-aliased edges
    background = _BACKGROUNDS[int(rng.choice(len(_BACKGROUNDS), p=NUISANCE["background_p"]))](rng, canvas_size)
    product = _pose(sprite, rng, rng.uniform(*NUISANCE["scale"]) * canvas_size)
    cx, cy = (0.5 + rng.uniform(-0.22, 0.22, size=2)) * canvas_size
    x, y = int(round(cx - product.width / 2)), int(round(cy - product.height / 2))
    scene = background.convert("RGBA")
    if rng.random() < 0.6:  # a soft drop shadow
        darkness = float(rng.uniform(0.25, 0.5))
        shadow = Image.new("RGBA", product.size, (0, 0, 0, 0))
        shadow.putalpha(product.getchannel("A").point(lambda a: int(a * darkness)))
        shadow = shadow.filter(ImageFilter.GaussianBlur(canvas_size / 40))
        offset = rng.integers(2, max(3, canvas_size // 16), size=2)
        _paste(scene, shadow, x + int(offset[0]), y + int(offset[1]))
    _paste(scene, product, x, y)
    if rng.random() < NUISANCE["occlusion_p"]:  # partial occlusion: a hand, a price tag or another object in front
        draw = ImageDraw.Draw(scene)
        w, h = product.width * rng.uniform(0.2, 0.45), product.height * rng.uniform(0.15, 0.4)
        ox, oy = x + rng.uniform(0, product.width), y + rng.uniform(0, product.height)
        kind = int(rng.integers(0, 3))
        if kind == 0:
            colour = _mix((224, 172, 135), _random_colour(rng), 0.15)
            draw.ellipse((ox - w, oy - h, ox + w, oy + h), fill=colour + (255,))
        elif kind == 1:
            draw.rectangle((ox - w / 2, oy - h / 2, ox + w / 2, oy + h / 2), fill=(250, 250, 245, 255), outline=(120, 120, 120, 255))
        else:
            draw.rectangle((ox - w, oy - h, ox + w, oy + h), fill=_random_colour(rng) + (255,))
    crop = rng.uniform(NUISANCE["crop_min"], 1.0) * canvas_size  # a random crop / zoom of the frame
    left, top = rng.uniform(0, canvas_size - crop, size=2)
    scene = scene.convert("RGB").crop((int(left), int(top), int(left + crop), int(top + crop)))
    if rng.random() < NUISANCE["blur_p"]:
        scene = scene.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.4, 1.8))))
    scene = scene.resize((image_size, image_size), _RESAMPLE.LANCZOS)
    pixels = _light(np.asarray(scene, dtype=np.float32) / 255.0, rng) * 255.0
    pixels = pixels + rng.normal(0.0, rng.uniform(0.0, 5.0), size=pixels.shape)
    return Image.fromarray(np.clip(np.round(pixels), 0, 255).astype(np.uint8))


def _paste(scene: Image.Image, layer: Image.Image, x: int, y: int) -> None:
    """Alpha-composite ``layer`` onto ``scene`` at (x, y), clipping whatever falls outside."""
    left, top = max(0, -x), max(0, -y)
    right, bottom = min(layer.width, scene.width - x), min(layer.height, scene.height - y)
    if right <= left or bottom <= top:
        return
    scene.alpha_composite(layer.crop((left, top, right, bottom)), (x + left, y + top))


def render_catalog(sprite: Image.Image, image_size: int) -> Image.Image:
    """The clean catalogue image: frontal product, centred, on white."""
    canvas_size = 2 * image_size
    box = sprite.getchannel("A").getbbox()
    product = sprite.crop(box) if box else sprite
    factor = 0.86 * canvas_size / max(product.size)
    product = product.resize((max(1, round(product.width * factor)), max(1, round(product.height * factor))), _RESAMPLE.LANCZOS)
    scene = Image.new("RGBA", (canvas_size, canvas_size), (250, 250, 250, 255))
    scene.alpha_composite(product, ((canvas_size - product.width) // 2, (canvas_size - product.height) // 2))
    return scene.convert("RGB").resize((image_size, image_size), _RESAMPLE.LANCZOS)


# --------------------------------------------------------------------------------------------
# Writing the data set


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
