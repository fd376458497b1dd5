"""Looking harder for a query's faces (``--look-harder``, the app's switch): what it finds, and at what cost.

Two detectors: the default settings (what a run trains, indexes and evaluates with) and the same
settings looking harder (:meth:`retrieval.faces.DetectorSettings.harder`: faces from 20 px, P-/R-Net
0.3, O-Net 0.9, rechecked at 0.9). Counted on

- validation photos of the training people (``face_scenes.py``, seeds ``--seeds``, made in a
  temporary folder: 300 one-person and 60 two-person photos and 300 photos without a face a seed):
  faces found in place (a box centre inside the pasted rectangle), faces missed, boxes elsewhere in
  the photos with faces, boxes in the photos without a face, and the median CPU milliseconds of a
  480 × 360 photo without a face;
- the test photos, as ``faces.py`` counts them (``att_faces_scenes`` pairs and single photos, the
  ``att_faces/test`` crops, every 20th ``grocery/test`` photo);
- ``faces.py``'s made group photo (12 faces of 24-46 px on a 1600 × 1200 photo).

Looking harder is for a photo a person looks at (one query, its boxes shown): the cost that counts is
a box around something that is not a face, which the person sees and does not pick.

    python benchmarks/look_harder.py                   # about 15 minutes on 2 cores
    python benchmarks/look_harder.py --write           # the look-harder section of BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))


def validation_counts(scenes: Path, detector) -> dict[str, float]:
    """Faces in place / missed / boxes elsewhere in face photos / boxes in photos without a face, and
    the median CPU ms of a photo without a face, for one ``face_scenes.py`` folder."""
    from PIL import Image

    from faces import centre_inside

    def rects(row, keys):
        return [[float(v) for v in row[key].split()] for key in keys]

    photos = []
    with open(scenes / "single.csv", newline="") as handle:
        photos += [(scenes / row["file"], rects(row, ["box"])) for row in csv.DictReader(handle)]
    with open(scenes / "pairs.csv", newline="") as handle:
        photos += [(scenes / row["file"], rects(row, ["left_box", "right_box"])) for row in csv.DictReader(handle)]
    photos += [(path, []) for path in sorted((scenes / "empty").glob("*.jpg"))]
    n = {"faces": 0, "in_place": 0, "elsewhere": 0, "empty_photos": 0, "empty_boxes": 0, "empty_with_box": 0}
    empty_ms = []
    for path, pasted in photos:
        image = Image.open(path).convert("RGB")
        started = time.process_time()
        found = detector.detect(image)
        if not pasted:
            empty_ms.append(1000 * (time.process_time() - started))
            n["empty_photos"] += 1
            n["empty_boxes"] += len(found)
            n["empty_with_box"] += bool(found)
            continue
        used = [False] * len(pasted)
        for face in found:
            hit = next((k for k, rect in enumerate(pasted) if not used[k] and centre_inside(face.box, rect)), None)
            if hit is None:
                n["elsewhere"] += 1
            else:
                used[hit] = True
        n["faces"] += len(pasted)
        n["in_place"] += sum(used)
    n["empty_ms"] = statistics.median(empty_ms)
    return n


def group_in_place(workdir: Path, settings) -> tuple[int, int, int]:
    """Faces of ``faces.py``'s group photo found in place, boxes elsewhere, and the number of faces."""
    from faces import centre_inside, group_photo
    from retrieval.faces import FacePipeline

    path, rects = group_photo(workdir)
    found = FacePipeline(settings).faces(path)
    in_place = sum(any(centre_inside(face.box, r) for face in found) for r in rects)
    elsewhere = sum(not any(centre_inside(face.box, r) for r in rects) for face in found)
    return in_place, elsewhere, len(rects)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[50, 51, 52], help="face_scenes.py seeds (default 50 51 52)")
    parser.add_argument("--write", action="store_true", help="write the look-harder section of BENCHMARKS.md")
    args = parser.parse_args()

    from _report import command_line, machine_description
    from face_scenes import make_scenes
    from faces import count_faces
    from retrieval.faces import DetectorSettings, MTCNNDetector

    detectors = {"default": DetectorSettings(), "looking harder": DetectorSettings().harder()}
    validation = {name: [] for name in detectors}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            scenes = Path(tmp) / f"seed{seed}"
            make_scenes(scenes, seed=seed)
            for name, settings in detectors.items():
                counts = validation_counts(scenes, MTCNNDetector(settings))
                validation[name].append(counts)
                print(f"seed {seed}, {name}: {counts}", flush=True)
        test = {name: count_faces(settings) for name, settings in detectors.items()}
        group = {name: group_in_place(Path(tmp), settings) for name, settings in detectors.items()}
    for name in detectors:
        print(name, test[name], group[name], flush=True)

    def total(name, key):
        return sum(counts[key] for counts in validation[name])

    lines = ["## Looking harder for a query's faces (benchmarks/look_harder.py)", "",
             f"Machine: {machine_description()}. Command: `{command_line()}`. Default: {label(detectors['default'])}; "
             f"looking harder: {label(detectors['looking harder'])} (`--look-harder`, the app's *Look harder for faces*).", "",
             f"Validation photos of the training people (`face_scenes.py` seeds {', '.join(map(str, args.seeds))}; "
             f"{total('default', 'faces')} faces in {len(args.seeds) * 360} photos, {total('default', 'empty_photos')} photos without a face):", "",
             "| detector | faces found in place | missed | boxes elsewhere in photos with faces | photos without a face given a box (boxes) | CPU ms, 480 × 360 photo without a face (median of the seeds' medians) |",
             "|---|---|---|---|---|---|"]
    for name in detectors:
        ms = statistics.median(counts["empty_ms"] for counts in validation[name])
        lines.append(f"| {name} | {total(name, 'in_place')} | {total(name, 'faces') - total(name, 'in_place')} | {total(name, 'elsewhere')} "
                     f"| {total(name, 'empty_with_box')} ({total(name, 'empty_boxes')}) | {ms:.0f} |")
    lines += ["", "Test photos (`att_faces_scenes`, as `faces.py` counts them) and `faces.py`'s group photo (12 faces of 24-46 px):", "",
              "| detector | pairs: both in place, no extra | single: exactly one face | crops: one face | grocery photos: no face | group photo: faces in place (elsewhere) |",
              "|---|---|---|---|---|---|"]
    for name in detectors:
        n, (in_place, elsewhere, faces) = test[name], group[name]
        lines.append(f"| {name} | {n['pairs_placed']}/{n['pairs']} ({n['pairs_missed']} missed, {n['pairs_extra']} extra) "
                     f"| {n['single_one']}/{n['single']} ({n['single_none']} none, {n['single_more']} more) | {n['crops_one']}/{n['crops']} "
                     f"| {n['grocery_none']}/{n['grocery']} ({n['grocery_faces']} faces found) | {in_place}/{faces} ({elsewhere}) |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        from _report import write_section

        write_section("look-harder", text)


def label(settings) -> str:
    """Settings in a few words: smallest face; P-, R-, O-Net thresholds; recheck."""
    return (f"faces from {settings.min_face_size} px, thresholds {', '.join(f'{t:g}' for t in settings.thresholds)}, "
            f"rechecked at {settings.recheck_threshold:g}")


if __name__ == "__main__":
    main()
