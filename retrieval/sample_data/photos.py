"""Photographing a product: the nuisance that a retrieval model has to learn to ignore.

:func:`render_photo` puts a product (an RGBA sprite from
:func:`~retrieval.sample_data.products.render_product`) into a scene under varied pose (rotation,
perspective), scale, crop, position, lighting (brightness, contrast, colour cast, gradient, gamma),
background (smooth texture, tablecloth pattern, clutter of random shapes and distractor logos),
drop shadow, blur, sensor noise and partial occlusion. :func:`render_catalog` renders the same
product once, clean and frontal on white. ``NUISANCE`` holds how strong each variation is.

Everything is drawn from the ``numpy`` ``Generator`` it is given, in a fixed order of draws: the
same stream gives the same pixels.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from retrieval.sample_data.products import LOGOS, blend, draw_logo

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
_RESAMPLE = Image.Resampling


def _random_colour(rng: np.random.Generator, muted: float = 0.0) -> tuple[int, int, int]:
    """A uniform random colour, mixed ``muted`` of the way to mid grey."""
    return blend(tuple(int(v) for v in rng.integers(0, 256, size=3)), (128, 128, 128), muted)


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
            colour = blend((224, 172, 135), _random_colour(rng), 0.15)
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
