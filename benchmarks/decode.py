"""Decoding hostile and large images: seconds and peak memory of ``retrieval.data.images``.

A 16-bit greyscale PNG compresses a flat 100-megapixel picture into about 214 KiB, so it is cheap
to upload and expensive to decode. Each case runs in a fresh process (peak RSS = the process's
VmHWM after decoding minus its RSS after the imports, i.e. what the decode added):

- reference: the decoder before issue 19 (Pillow opens the file, ``np.asarray``, 16-bit scaled to
  8 bits in float64, then RGB), reimplemented here;
- ``load_image`` of the same file as a training file (limit MAX_IMAGE_PIXELS, 100 MP): integer
  scaling through a lookup table, EXIF rotation in place;
- ``load_image_bytes`` of it as an upload (limit MAX_QUERY_PIXELS, 40 MP): refused from the header;
- uploads at the query limit: a 40 MP 16-bit PNG and a 40 MP JPEG photo-like picture.

    python benchmarks/decode.py [--no-write]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _report import command_line, machine_description, write_section

REPO = Path(__file__).resolve().parent.parent


def make_files(folder: Path) -> dict[str, Path]:
    import numpy as np
    from PIL import Image

    from retrieval.data.images import MAX_QUERY_PIXELS

    Image.MAX_IMAGE_PIXELS = None
    files = {}
    path = folder / "flat16_100mp.png"
    Image.new("I;16", (10_000, 10_000), 1000).save(path)
    files["100 MP 16-bit PNG"] = path
    width = 7300
    height = MAX_QUERY_PIXELS // width
    path = folder / "flat16_40mp.png"
    Image.new("I;16", (width, height), 1000).save(path)
    files[f"{width}x{height} 16-bit PNG"] = path
    rng = np.random.default_rng(0)
    coarse = Image.fromarray(rng.integers(0, 255, (height // 16, width // 16, 3), dtype=np.uint8))
    path = folder / "photo_40mp.jpg"
    coarse.resize((width, height), Image.BILINEAR).save(path, quality=90)
    files[f"{width}x{height} JPEG"] = path
    return files


def measure(case: str, path: Path) -> dict:
    """Run one case in a fresh process; its seconds, added peak RSS and outcome."""
    code = f"""
import json, sys, time
sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
from decode import run_case
print(json.dumps(run_case({case!r}, {str(path)!r})))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_case(case: str, path: str) -> dict:
    import numpy as np  # noqa: F401  imported before the baseline is taken
    from PIL import Image  # noqa: F401

    from retrieval.data import images

    data = Path(path).read_bytes()
    before = _rss_kib("VmRSS")
    started = time.perf_counter()
    outcome = "decoded"
    try:
        if case == "reference":
            _reference_decode(data)
        elif case == "training file":
            images.load_image(path)
        else:
            images.load_image_bytes(data, Path(path).name)
    except Exception as error:  # noqa: BLE001  the refusal is the outcome measured
        outcome = f"refused: {str(error).split(':')[0]}"
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "peak_mib": (_rss_kib("VmHWM") - before) / 1024, "outcome": outcome}


def _reference_decode(data: bytes):
    """The decoder before issue 19: content-sniffed open, a copy for EXIF, float64 scaling."""
    import numpy as np
    from PIL import Image, ImageOps

    Image.MAX_IMAGE_PIXELS = None
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        upright = ImageOps.exif_transpose(image)
        pixels = np.asarray(upright)
        values = pixels.astype(np.float64)
        scaled = np.clip(np.rint(values * (255.0 / 65535.0)), 0, 255).astype(np.uint8)
        return Image.fromarray(scaled).convert("RGB")


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        files = make_files(Path(tmp))
        big = files["100 MP 16-bit PNG"]
        rows = [("100 MP 16-bit PNG", f"{big.stat().st_size / 1024:.0f} KiB", case, measure(case, big))
                for case in ("reference", "training file", "upload")]
        for name, path in list(files.items())[1:]:
            rows.append((name, f"{path.stat().st_size / 1024:.0f} KiB", "upload", measure("upload", path)))
    reference = rows[0][3]
    lines = [
        "Decoding one image in a fresh process: seconds and the peak memory the decode added (VmHWM after "
        "minus RSS before). Reference: the decoder before issue 19 (float64 16-bit scaling, an EXIF copy), "
        "reimplemented in the benchmark.",
        "",
        "| file | size | decoded as | outcome | seconds | peak + MiB | vs reference (time, memory) |",
        "|---|---|---|---|---|---|---|",
    ]
    names = {"reference": "reference decoder", "training file": "`load_image` (training, 100 MP limit)",
             "upload": "`load_image_bytes` (upload, 40 MP limit)"}
    for name, size, case, result in rows:
        ratio = "" if case == "reference" or name != rows[0][0] else (
            f"{result['seconds'] / reference['seconds']:.3f}x, {result['peak_mib'] / max(reference['peak_mib'], 1):.3f}x")
        lines.append(f"| {name} | {size} | {names[case]} | {result['outcome']} | {result['seconds']:.2f} | "
                     f"{result['peak_mib']:.0f} | {ratio} |")
    lines += [
        "",
        f"Machine: {machine_description()}; load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after "
        f"(shared with other work: the seconds are pessimistic, the memory is not affected).",
        f"Command: `{command_line()}`",
    ]
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        write_section("decode", body)


if __name__ == "__main__":
    main()
