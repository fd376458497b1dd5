"""The sample data's products: which classes there are and how each one is drawn.

Every class is one product: a shape (``box``, ``bottle``, ``can``), a body colour and a logo
(a geometric shape or a letter), with label stripes in a trim colour. Classes come in groups of six
built to be confusable (see :func:`_group`): some differ only in logo, some only in shape, some
only in a similar colour. The class list is fixed (it does not depend on the seed).

Public names: :class:`ProductSpec`, :func:`product_specs` and :func:`split_specs` (the classes),
:func:`render_product` (a product on a transparent canvas), :func:`draw_logo`, :func:`blend` (of
two colours), and the palettes ``SHAPES``, ``COLOURS``, ``LOGOS``, ``TRIMS``; ``MAX_CLASSES`` is
how many distinct products exist.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from retrieval.errors import RetrievalError

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
# Drawing: logos and products


def blend(colour, other, t: float) -> tuple[int, int, int]:
    """``colour`` mixed ``t`` of the way to ``other`` (RGB, rounded to integers)."""
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
        draw.polygon([(x0, y0), (x1, y0), (x1 + depth, y0 - depth), (x0 + depth, y0 - depth)], fill=blend(body, (255, 255, 255), 0.35))
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
