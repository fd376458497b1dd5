"""Face pipeline benchmark: what detection + alignment cost per image, and whether the faces are found.

Speed (``retrieval.faces.FacePipeline``, MTCNN on the CPU, default settings, aligned crops of
112 px): per image, decode + detect + align every face, median of ``--repeats`` runs after one
warm-up, for a 480 × 360 scene of ``att_faces_scenes/single``, a two-person scene of ``pairs/``,
a 1-megapixel photo (the same scene upscaled to 1155 × 866, saved as JPEG q90), a 12-megapixel
photo (the two-person scene upscaled to 4000 × 3000, JPEG q90) and a 92 × 112 ``att_faces`` crop; then the same with the cache warm (SHA-256 of the file, the JSON entry and
the PNG crops read back), and detect + align again with ``landmark_passes`` 0 (O-Net's first
landmarks, no refinement: the reference the refinement's cost is given against, measured in the
same run) and with torch's ``nn.MaxPool2d`` layers in MTCNN instead of ``StridedMaxPool`` (the same
numbers; the reference for what the strided views save), and with ``max_side`` 0 (every photo searched
whole: the reference for what searching a large photo as a 1600 px copy saves); last, the cost of looking for
smaller faces (``--face-min-size 20``, and with ``--face-max-side 0`` too: every photo searched whole
for faces from 20 px, what a group photo needs), and the faces found in a made group photo (12 faces of
24-46 px on a 1600 × 1200 grocery photo) at the default and at 20 px. Wall-clock and CPU time (both threads together) are given, with the
load average: on a shared machine the wall-clock is pessimistic. Batching: ``detect_many`` over
32 scenes and 32 crops (each set of one size), CPU time, batch 1 against batch 8.

Quality, for the default settings, for faces from 20 px (``--face-min-size 20``) and for facenet-pytorch's own (20 px; 0.6, 0.7, 0.7; 0.709):
``pairs/`` (30 photos, two people each): every face found in its place (the centre of a found box
inside the rectangle ``pairs.csv`` gives) and no extra face; ``single/`` (100 photos): exactly one
face; ``att_faces/test`` (100 crops): exactly one face; every 20th ``grocery/test`` photo: no face.

    python benchmarks/faces.py            # a few minutes on 2 cores
    python benchmarks/faces.py --threads 1
    python benchmarks/faces.py --quick    # speed only, 3 repeats

Prints a Markdown section; ``--write`` puts it between ``<!-- faces:start -->`` and
``<!-- faces:end -->`` in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATASETS = ROOT.parent / "shared" / "datasets"
SCENES = DATASETS / "att_faces_scenes"
SCENE = SCENES / "single" / "s31" / "1.jpg"
PAIR = SCENES / "pairs" / "000.jpg"
CROP = DATASETS / "att_faces" / "test" / "s31" / "1.png"
MEGAPIXEL = (1155, 866)
TWELVE_MEGAPIXELS = (4000, 3000)
SMALL_FACES = 20  # --face-min-size of the "smaller faces" columns and quality row
GROUP_SIZE = (1600, 1200)  # the made group photo (group_photo)


def timed(call, repeats: int) -> tuple[float, float]:
    """Median wall-clock and CPU milliseconds of ``call()`` over ``repeats`` runs (after one warm-up)."""
    call()
    wall, cpu = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        call()
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    return 1000 * statistics.median(wall), 1000 * statistics.median(cpu)


def speed(workdir: Path, repeats: int) -> tuple[list[dict], float]:
    from PIL import Image

    from retrieval.data.images import load_image
    from retrieval.faces import DetectorSettings, FacePipeline, align_face
    from retrieval.faces.align import mask_outside_face

    megapixel = workdir / "megapixel.jpg"
    Image.open(SCENE).convert("RGB").resize(MEGAPIXEL, Image.Resampling.BICUBIC).save(megapixel, quality=90)
    large = workdir / "twelve_megapixels.jpg"
    Image.open(PAIR).convert("RGB").resize(TWELVE_MEGAPIXELS, Image.Resampling.BICUBIC).save(large, quality=90)
    images = [("480 × 360 scene, 1 face", SCENE), ("480 × 360 scene, 2 faces", PAIR),
              (f"{MEGAPIXEL[0]} × {MEGAPIXEL[1]} photo (1 MP), 1 face", megapixel),
              (f"{TWELVE_MEGAPIXELS[0]} × {TWELVE_MEGAPIXELS[1]} photo (12 MP), 2 faces", large), ("92 × 112 crop, 1 face", CROP)]
    import torchvision  # noqa: F401  (imported by any run through timm; not part of MTCNN's load time)

    started = time.perf_counter()
    cold = FacePipeline()
    cold.faces(CROP)  # the first call imports facenet-pytorch and loads MTCNN's three networks
    load_ms = 1000 * (time.perf_counter() - started)
    print(f"  first call (loads MTCNN): {load_ms:.0f} ms", flush=True)
    warm = FacePipeline(cache_dir=workdir / "faces")
    unrefined = FacePipeline(DetectorSettings(landmark_passes=0))  # loads its MTCNN in timed()'s warm-up call
    torch_pools = with_torch_max_pools(FacePipeline())
    whole = FacePipeline(DetectorSettings(max_side=0))
    small = FacePipeline(DetectorSettings(min_face_size=SMALL_FACES))  # --face-min-size 20
    small_whole = FacePipeline(DetectorSettings(min_face_size=SMALL_FACES, max_side=0))  # and --face-max-side 0
    rows = []
    for name, path in images:
        picture = load_image(path)
        found = cold.detector.detect(picture)
        wall, cpu = timed(lambda: cold.faces(path), repeats)
        align, _ = timed(lambda: [mask_outside_face(align_face(picture, face.landmarks)) for face in found], repeats)
        warm_wall, _ = timed(lambda: warm.faces(path), repeats)
        plain_wall, _ = timed(lambda: unrefined.faces(path), repeats)
        pools_wall, pools_cpu = timed(lambda: torch_pools.faces(path), repeats)
        whole_wall, _ = timed(lambda: whole.faces(path), repeats)
        small_wall, _ = timed(lambda: small.faces(path), repeats)
        small_whole_wall, _ = timed(lambda: small_whole.faces(path), repeats)
        rows.append({"image": name, "faces": len(found), "wall": wall, "cpu": cpu, "align": align, "warm_wall": warm_wall,
                     "unrefined_wall": plain_wall, "torch_pools_wall": pools_wall, "torch_pools_cpu": pools_cpu,
                     "whole_wall": whole_wall, "whole_faces": len(whole.detector.detect(picture)),
                     "small_wall": small_wall, "small_faces": len(small.detector.detect(picture)),
                     "small_whole_wall": small_whole_wall, "small_whole_faces": len(small_whole.detector.detect(picture))})
        print(f"  {name}: {wall:.0f} ms ({cpu:.0f} ms CPU; align {align:.1f} ms), warm cache {warm_wall:.1f} ms, "
              f"without landmark refinement {plain_wall:.0f} ms, with torch's max pooling {pools_wall:.0f} ms "
              f"({pools_cpu:.0f} ms CPU), searched whole {whole_wall:.0f} ms, faces from {SMALL_FACES} px {small_wall:.0f} ms "
              f"(searched whole {small_whole_wall:.0f} ms)", flush=True)
    return rows, load_ms


def with_torch_max_pools(pipeline):
    """``pipeline`` with MTCNN's six pooling layers put back to torch's ``nn.MaxPool2d`` (ceil_mode),
    the layers :class:`~retrieval.faces.cascade.StridedMaxPool` replaces with the same numbers."""
    import torch

    from retrieval.faces.cascade import StridedMaxPool

    mtcnn = pipeline.detector._load()
    for net in (mtcnn.pnet, mtcnn.rnet, mtcnn.onet):
        for name, layer in list(net.named_children()):
            if isinstance(layer, StridedMaxPool):
                setattr(net, name, torch.nn.MaxPool2d(layer.kernel, layer.stride, ceil_mode=True))
    return pipeline


def app_server_time(workdir: Path, repeats: int, size: tuple[int, int] = MEGAPIXEL) -> dict:
    """The app's server time for an upload of ``size`` (default 1 megapixel) on a face run: the Search page's own "Server
    time" (its script from start to end: decode, detect, align, embed and search every face, draw the
    boxes, the result rows) through Streamlit's AppTest, for ``repeats`` uploads of distinct content
    (one pixel changed: the page caches by file content) after a first upload that loads the model,
    the index and MTCNN. Run: resnet10t at 64 px, D 128, untrained (the cost of a trained one), on
    att_faces/train; gallery: att_faces/test (100 faces); trained and indexed once per ``workdir``."""
    import io
    import re

    from PIL import Image
    from streamlit.testing.v1 import AppTest

    from retrieval.index import build_index
    from retrieval.training import TrainConfig, train

    run = workdir / "face-run"
    if not (run / "index").is_dir():
        train(TrainConfig(data_dir=DATASETS / "att_faces" / "train", out=run, faces=True, backbone="resnet10t", image_size=64,
                          embedding_dim=128, epochs=0, num_workers=0), progress=False)
        build_index(run, DATASETS / "att_faces" / "test", device="cpu")
    photo = Image.open(SCENE).convert("RGB").resize(size, Image.Resampling.BICUBIC)
    os.environ["RETRIEVAL_RUN_DIR"] = str(run)
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=120).run()
    times = []
    for attempt in range(repeats + 1):
        photo.putpixel((attempt, 0), (attempt, 0, 0))
        buffer = io.BytesIO()
        photo.save(buffer, format="JPEG", quality=90)
        at.file_uploader(key="upload").set_value((f"photo{attempt}.jpg", buffer.getvalue(), "image/jpeg")).run()
        if at.exception:
            raise RuntimeError(at.exception[0].value)
        shown = [c.value for c in at.caption if c.value.startswith("Server time")]
        times.append(float(re.match(r"Server time (\d+) ms", shown[0]).group(1)))
        print(f"  upload {attempt} ({'first: loads model, index and MTCNN' if attempt == 0 else 'warm'}): {times[-1]:.0f} ms", flush=True)
    return {"first": times[0], "median": statistics.median(times[1:]), "all": times[1:], "bytes": len(buffer.getvalue())}


def group_photo(workdir: Path) -> tuple[Path, list[tuple[int, int, int, int]]]:
    """A made "group photo": 12 ``att_faces/test`` faces (s31-s40 image 3, s31 and s32 image 4)
    scaled to 24, 26, ..., 46 px wide, pasted in a 4 × 3 grid on a ``grocery/test`` photo resized to
    1600 × 1200 (JPEG q90); the file and the pasted rectangles (x0, y0, x1, y1)."""
    from PIL import Image

    backgrounds = sorted((DATASETS / "grocery" / "test").rglob("*.jpg"))
    photo = Image.open(backgrounds[0]).convert("RGB").resize(GROUP_SIZE, Image.Resampling.BICUBIC)
    people = [(f"s{n}", 3) for n in range(31, 41)] + [("s31", 4), ("s32", 4)]
    rects = []
    for k, (person, image) in enumerate(people):
        width = 24 + 2 * k
        face = Image.open(DATASETS / "att_faces" / "test" / person / f"{image}.png").convert("RGB")
        face = face.resize((width, round(width * face.height / face.width)), Image.Resampling.LANCZOS)
        x, y = 200 + 400 * (k % 4), 250 + 350 * (k // 4)
        photo.paste(face, (x, y))
        rects.append((x, y, x + face.width, y + face.height))
    path = workdir / "group.jpg"
    photo.save(path, quality=90)
    return path, rects


def group_counts(workdir: Path, repeats: int) -> dict[str, dict]:
    """Faces of :func:`group_photo` found in place (a box centre inside a pasted rectangle) and
    elsewhere, and decode + detect + align ms, at the default settings and at ``--face-min-size`` 20."""
    from retrieval.faces import DetectorSettings, FacePipeline

    path, rects = group_photo(workdir)
    result = {}
    for name, settings in (("default", DetectorSettings()), (f"faces from {SMALL_FACES} px", DetectorSettings(min_face_size=SMALL_FACES))):
        pipeline = FacePipeline(settings)
        found = pipeline.faces(path)
        in_place = sum(any(centre_inside(face.box, r) for face in found) for r in rects)
        elsewhere = sum(not any(centre_inside(face.box, r) for r in rects) for face in found)
        wall, _ = timed(lambda: pipeline.faces(path), repeats)
        result[name] = {"in_place": in_place, "elsewhere": elsewhere, "faces": len(rects), "wall": wall}
        print(f"  group photo, {name}: {in_place} of {len(rects)} faces in place, {elsewhere} elsewhere, {wall:.0f} ms", flush=True)
    return result


def batching(repeats: int) -> dict[str, dict[int, float]]:
    """CPU milliseconds an image of ``detect_many`` over 32 images of one size, by batch size."""
    from PIL import Image

    from retrieval.faces import MTCNNDetector

    sets = {"480 × 360 scenes": sorted((SCENES / "single").glob("*/*.jpg"))[:32],
            "92 × 112 crops": sorted((DATASETS / "att_faces" / "test").glob("*/*.png"))[:32]}
    result: dict[str, dict[int, float]] = {}
    for name, paths in sets.items():
        images = [Image.open(p).convert("RGB") for p in paths]
        result[name] = {}
        for batch_size in (1, 8):
            detector = MTCNNDetector(batch_size=batch_size)
            _, cpu = timed(lambda: detector.detect_many(images), max(1, repeats // 2))
            result[name][batch_size] = cpu / len(images)
            print(f"  {name}, batch {batch_size}: {result[name][batch_size]:.0f} CPU ms an image", flush=True)
    return result


def centre_inside(box, rect) -> bool:
    """Whether the centre of ``box`` (x0, y0, x1, y1) lies inside ``rect`` (x0, y0, x1, y1): a face found in its place."""
    x, y = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return rect[0] <= x <= rect[2] and rect[1] <= y <= rect[3]


def count_faces(settings, scenes: Path = SCENES, crops: Path = DATASETS / "att_faces" / "test",
                grocery: list[Path] | None = None) -> dict[str, int]:
    """Faces MTCNN finds with ``settings``: in ``scenes/pairs`` (both in place: a box centre inside
    each rectangle of ``pairs.csv``, and no extra), ``scenes/single`` (exactly one), the crops under
    ``crops`` (exactly one) and the ``grocery`` photos (none; default every 20th of grocery/test)."""
    from PIL import Image

    from retrieval.faces import MTCNNDetector

    detector = MTCNNDetector(settings)

    def count(paths):
        return [len(detector.detect(Image.open(p).convert("RGB"))) for p in paths]

    with open(scenes / "pairs.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    placed = missed = extra = 0
    for row in rows:
        faces = detector.detect(Image.open(scenes / row["file"]).convert("RGB"))
        rects = [[float(v) for v in row[key].split()] for key in ("left_box", "right_box")]
        hits = [sum(centre_inside(f.box, r) for f in faces) for r in rects]
        missed += sum(h == 0 for h in hits)
        extra += len(faces) - sum(min(h, 1) for h in hits)
        placed += len(faces) == 2 and hits == [1, 1]
    single = count(sorted((scenes / "single").glob("*/*.jpg")))
    crop_counts = count(sorted(crops.glob("*/*.png")))
    if grocery is None:
        grocery = sorted((DATASETS / "grocery" / "test").glob("*/*.jpg"))[::20]
    grocery_counts = count(grocery)
    return {"pairs": len(rows), "pairs_placed": placed, "pairs_missed": missed, "pairs_extra": extra,
            "single": len(single), "single_one": sum(n == 1 for n in single), "single_none": sum(n == 0 for n in single),
            "single_more": sum(n > 1 for n in single), "single_extra": sum(max(n - 1, 0) for n in single),
            "crops": len(crop_counts), "crops_one": sum(n == 1 for n in crop_counts), "crops_none": sum(n == 0 for n in crop_counts),
            "crops_extra": sum(max(n - 1, 0) for n in crop_counts),
            "grocery": len(grocery_counts), "grocery_none": sum(n == 0 for n in grocery_counts), "grocery_faces": sum(grocery_counts)}


def quality(settings) -> dict[str, str]:
    """:func:`count_faces` on the test photos, as table cells."""
    n = count_faces(settings)
    return {
        "pairs": f"{n['pairs_placed']}/{n['pairs']} ({n['pairs_missed']} missed, {n['pairs_extra']} extra)",
        "single": f"{n['single_one']}/{n['single']} ({n['single_none']} none, {n['single_more']} more)",
        "crops": f"{n['crops_one']}/{n['crops']}",
        "grocery": f"{n['grocery_none']}/{n['grocery']} ({n['grocery_faces']} faces found)",
    }


def label(settings) -> str:
    """Settings in a few characters: min face size; thresholds; scale factor (landmark passes do not change what is found)."""
    return f"{settings.min_face_size} px; {', '.join(f'{t:g}' for t in settings.thresholds)}; {settings.scale_factor:g}"


def markdown(saved: dict) -> str:
    lines = [
        "## Faces: detection + alignment cost, and faces found",
        "",
        f"`{saved['command']}` on {saved['machine']}. {saved['load']}",
        "",
        "Per image: decode + MTCNN (CPU, default settings) + align every face to 112 px and grey it outside the face oval; median of "
        f"{saved['repeats']} runs. Warm: the same image again with the cache filled (hash, JSON, PNG crops). "
        f"The first call of a process also loads MTCNN (torchvision already imported): {saved['load_ms']:.0f} ms.",
        "",
        "| image | faces | decode + detect + align, ms | its CPU ms | of which align + face mask, ms | warm cache, ms "
        "| reference: without landmark refinement, ms (ratio) | reference: torch's max-pooling layers, ms (ratio); its CPU ms "
        "| reference: searched whole (`max_side` 0), ms (ratio); its faces |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in saved["speed"]:
        lines.append(f"| {row['image']} | {row['faces']} | {row['wall']:.0f} | {row['cpu']:.0f} | {row['align']:.1f} "
                     f"| {row['warm_wall']:.1f} | {row['unrefined_wall']:.0f} ({row['wall'] / row['unrefined_wall']:.2f}x) "
                     f"| {row['torch_pools_wall']:.0f} ({row['wall'] / row['torch_pools_wall']:.2f}x); {row['torch_pools_cpu']:.0f} "
                     f"| {row['whole_wall']:.0f} ({row['wall'] / row['whole_wall']:.2f}x); {row['whole_faces']} |")
    lines += ["", f"Looking for smaller faces, the same images: with `--face-min-size {SMALL_FACES}` (`min_face_size` {SMALL_FACES}), "
              f"and with `--face-max-side 0` too (every photo searched whole, so a 12 MP photo's faces are found from {SMALL_FACES} px "
              "rather than 100), ms (ratio to the default's), faces found:", "",
              f"| image | default, ms | faces from {SMALL_FACES} px, ms (ratio); faces | and searched whole, ms (ratio); faces |", "|---|---|---|---|"]
    for row in saved["speed"]:
        lines.append(f"| {row['image']} | {row['wall']:.0f} | {row['small_wall']:.0f} ({row['small_wall'] / row['wall']:.2f}x); {row['small_faces']} "
                     f"| {row['small_whole_wall']:.0f} ({row['small_whole_wall'] / row['wall']:.2f}x); {row['small_whole_faces']} |")
    if saved.get("group"):
        group = saved["group"]
        lines += ["", f"A made group photo ({GROUP_SIZE[0]} × {GROUP_SIZE[1]}, a grocery/test photo with 12 att_faces/test faces pasted "
                  "24 to 46 px wide): " + "; ".join(f"{name}, {g['in_place']} of {g['faces']} faces found in place and "
                                                     f"{g['elsewhere']} elsewhere, {g['wall']:.0f} ms" for name, g in group.items()) + "."]
    if saved.get("app"):
        app = saved["app"]
        lines += ["", f"The app's server time for a {MEGAPIXEL[0]} × {MEGAPIXEL[1]} (1 MP) JPEG upload ({app['bytes'] // 1024} KiB) on a face run "
                  "(resnet10t, 64 px, D 128; gallery att_faces/test, 100 faces), as the Search page measures it (decode, detect, align, "
                  f"embed and search every face, boxes and result rows), through Streamlit's AppTest: median **{app['median']:.0f} ms** "
                  f"over {len(app['all'])} uploads of distinct content ({', '.join(f'{t:.0f}' for t in app['all'])}); the first upload, "
                  f"which loads the model, the index and MTCNN: {app['first']:.0f} ms. Goal: ≤ 300 ms."]
    if saved.get("app_large"):
        large = saved["app_large"]
        lines += ["", f"The same for a {TWELVE_MEGAPIXELS[0]} × {TWELVE_MEGAPIXELS[1]} (12 MP) JPEG upload ({large['bytes'] // 1024} KiB), "
                  f"a phone photo's size: median **{large['median']:.0f} ms** over {len(large['all'])} uploads "
                  f"({', '.join(f'{t:.0f}' for t in large['all'])})."]
    if saved.get("batching"):
        lines += ["", "`detect_many` over 32 images of one size, CPU ms an image: " + "; ".join(
            f"{name} {b[1]:.0f} one at a time, {b[8]:.0f} in batches of 8" for name, b in saved["batching"].items()) + "."]
    if saved.get("quality"):
        lines += ["", "| settings | pairs/ (both in place, no extra) | single/ (exactly one) | att_faces/test crops (one) | grocery photos (none) |",
                  "|---|---|---|---|---|"]
        for name, q in saved["quality"].items():
            lines.append(f"| {name} | {q['pairs']} | {q['single']} | {q['crops']} | {q['grocery']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per image (median; default 7)")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1), help="torch threads (default: 2)")
    parser.add_argument("--quick", action="store_true", help="speed only, 3 repeats")
    parser.add_argument("--write", action="store_true", help="write the section into BENCHMARKS.md")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    if not SCENES.is_dir():
        sys.exit(f"needs {SCENES} (../shared/datasets beside the checkout)")
    import torch

    from _report import command_line, machine_description, publish
    from retrieval.faces import DetectorSettings

    torch.set_num_threads(args.threads)
    repeats = 3 if args.quick else args.repeats
    load_before = os.getloadavg()[0]
    print("speed:", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        rows, load_ms = speed(Path(tmp), repeats)
        group = group_counts(Path(tmp), repeats)
        print("app server time:", flush=True)
        app = app_server_time(Path(tmp), repeats)
        app_large = app_server_time(Path(tmp), repeats, TWELVE_MEGAPIXELS)
    saved = {"speed": rows, "load_ms": load_ms, "group": group, "repeats": repeats, "command": command_line(), "machine": machine_description(),
             "app": app, "app_large": app_large}
    if not args.quick:
        saved["batching"] = batching(repeats)
        print("quality:", flush=True)
        ours, theirs = DetectorSettings(), DetectorSettings(20, (0.6, 0.7, 0.7), 0.709, landmark_passes=0)
        small = DetectorSettings(min_face_size=SMALL_FACES)
        saved["quality"] = {f"default ({label(ours)})": quality(ours), f"`--face-min-size {SMALL_FACES}` ({label(small)})": quality(small),
                            f"facenet-pytorch's ({label(theirs)})": quality(theirs)}
    load_after, cores = os.getloadavg()[0], os.cpu_count()
    saved["load"] = (f"Load average (1 min) {load_before:.1f} at the start, {load_after:.1f} at the end on {cores} cores"
                     + (": the machine was shared and loaded, wall-clock timings are pessimistic."
                        if load_before > 0.5 * cores else " (the end's includes this benchmark's own threads)."))
    publish("faces", markdown(saved), args.write)


if __name__ == "__main__":
    main()
