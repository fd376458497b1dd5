"""Validation scenes: the training people's faces pasted into grocery photos, as ``att_faces_scenes`` was made.

``../shared/datasets/att_faces_scenes`` pastes the unseen test people (``att_faces/test``, s31-s40)
into ``grocery/test`` photos; it is the test set of the face pipeline, so no setting may be chosen
on it. This script builds the same kind of photos from what training may look at: the training
people (``att_faces/train``, s1-s30) on ``grocery/train`` backgrounds, with the recipe the
dataset's README gives:

- ``single/<person>/<n>.jpg``: each face image, scaled by a factor drawn from 1.0-2.0, pasted at a
  random place (its edge feathered over ``FEATHER`` pixels) on a 480 × 360 background photo (a
  4:3 cut of a grocery photo, resized), saved as JPEG quality 90;
- ``pairs/NNN.jpg``: two different people a photo, one in each half; ``pairs.csv`` has the
  columns of the dataset's (file, left_person, left_image, right_person, right_image, left_box,
  right_box; boxes "x0 y0 x1 y1", the pasted rectangles);
- beyond the dataset: ``single.csv`` (file, person, image, box) gives where each one-person photo's
  face is, and ``empty/NNN.jpg`` are backgrounds made the same way with no face pasted (the
  control for faces found where there is none).

    python benchmarks/face_scenes.py OUT [--seed 0] [--pairs 60] [--empty 300]

The same seed gives the same photos. ``benchmarks/detector_settings.py`` uses them to choose
MTCNN's settings.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

ROOT = Path(__file__).resolve().parent.parent
DATASETS = ROOT.parent / "shared" / "datasets"
PEOPLE = DATASETS / "att_faces" / "train"
BACKGROUNDS = DATASETS / "grocery" / "train"
SCENE_SIZE = (480, 360)
SCALES = (1.0, 2.0)
FEATHER = 8
QUALITY = 90


def background(path: Path, rng: np.random.Generator) -> Image.Image:
    """A 4:3 cut of the photo at ``path`` (random offset along its longer side), resized to 480 × 360."""
    photo = Image.open(path).convert("RGB")
    width, height = photo.size
    cut_w, cut_h = (width, round(width * 3 / 4)) if width * 3 <= height * 4 else (round(height * 4 / 3), height)
    x, y = int(rng.integers(0, width - cut_w + 1)), int(rng.integers(0, height - cut_h + 1))
    return photo.crop((x, y, x + cut_w, y + cut_h)).resize(SCENE_SIZE, Image.Resampling.BICUBIC)


def paste_face(scene: Image.Image, face_path: Path, region: tuple[int, int, int, int], rng: np.random.Generator) -> tuple[int, int, int, int]:
    """Scale the face image by U(1, 2), paste it at a random place inside ``region`` (x0, y0, x1,
    y1) with a feathered edge; return the pasted rectangle."""
    face = Image.open(face_path).convert("RGB")
    scale = float(rng.uniform(*SCALES))
    size = (round(face.width * scale), round(face.height * scale))
    face = face.resize(size, Image.Resampling.BICUBIC)
    x0 = int(rng.integers(region[0], max(region[0], region[2] - size[0]) + 1))
    y0 = int(rng.integers(region[1], max(region[1], region[3] - size[1]) + 1))
    mask = Image.new("L", size, 0)
    mask.paste(255, (FEATHER, FEATHER, size[0] - FEATHER, size[1] - FEATHER))
    scene.paste(face, (x0, y0), mask.filter(ImageFilter.GaussianBlur(FEATHER / 2)))
    return x0, y0, x0 + size[0], y0 + size[1]


def write_csv(path: Path, rows: list[dict[str, str]]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def make_scenes(out: Path, seed: int = 0, n_pairs: int = 60, n_empty: int = 300, people: Path = PEOPLE,
                backgrounds: Path = BACKGROUNDS) -> dict[str, int]:
    """Write ``single/``, ``single.csv``, ``pairs/``, ``pairs.csv`` and ``empty/`` under ``out``;
    return how many photos of each kind."""
    rng = np.random.default_rng(seed)
    faces = sorted(people.glob("*/*.png"))
    photos = sorted(backgrounds.glob("*/*.jpg"))
    if not faces or not photos:
        raise SystemExit(f"needs face images in {people} and photos in {backgrounds}")
    width, height = SCENE_SIZE
    singles = []
    for face in faces:
        scene = background(photos[int(rng.integers(len(photos)))], rng)
        box = paste_face(scene, face, (0, 0, width, height), rng)
        name = f"single/{face.parent.name}/{face.stem}.jpg"
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        scene.save(out / name, quality=QUALITY)
        singles.append({"file": name, "person": face.parent.name, "image": face.name, "box": " ".join(map(str, box))})
    write_csv(out / "single.csv", singles)
    (out / "pairs").mkdir(parents=True, exist_ok=True)
    by_person: dict[str, list[Path]] = {}
    for face in faces:
        by_person.setdefault(face.parent.name, []).append(face)
    names = sorted(by_person)
    rows = []
    for number in range(n_pairs):
        left, right = rng.choice(len(names), size=2, replace=False)
        left_face = by_person[names[left]][int(rng.integers(len(by_person[names[left]])))]
        right_face = by_person[names[right]][int(rng.integers(len(by_person[names[right]])))]
        scene = background(photos[int(rng.integers(len(photos)))], rng)
        left_box = paste_face(scene, left_face, (0, 0, width // 2, height), rng)
        right_box = paste_face(scene, right_face, (width // 2, 0, width, height), rng)
        name = f"pairs/{number:03d}.jpg"
        scene.save(out / name, quality=QUALITY)
        rows.append({"file": name, "left_person": names[left], "left_image": left_face.name, "right_person": names[right],
                     "right_image": right_face.name, "left_box": " ".join(map(str, left_box)),
                     "right_box": " ".join(map(str, right_box))})
    write_csv(out / "pairs.csv", rows)
    (out / "empty").mkdir(parents=True, exist_ok=True)
    for number in range(n_empty):
        background(photos[int(rng.integers(len(photos)))], rng).save(out / "empty" / f"{number:03d}.jpg", quality=QUALITY)
    return {"single": len(faces), "pairs": len(rows), "empty": n_empty}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder to write single/, pairs/ and pairs.csv into")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pairs", type=int, default=60, help="two-person photos (default 60)")
    parser.add_argument("--empty", type=int, default=300, help="photos without a face (default 300)")
    args = parser.parse_args()
    counts = make_scenes(args.out, args.seed, args.pairs, args.empty)
    print(f"wrote {counts['single']} one-person, {counts['pairs']} two-person and {counts['empty']} empty photos under {args.out}")


if __name__ == "__main__":
    main()
