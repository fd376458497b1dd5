"""Shared by the benchmarks: describe the machine and replace one section of BENCHMARKS.md atomically."""

from __future__ import annotations

import os
import platform
import re
import sys
from pathlib import Path

import torch

BENCHMARKS_MD = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"


def machine_description(device: torch.device | None = None) -> str:
    """One line: CPU model, cores, torch version, and the GPU when one is used."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    text = f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"
    if device is not None and device.type == "cuda":
        text += f", GPU {torch.cuda.get_device_name(device)}"
    return text


def command_line() -> str:
    return "python " + " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:])


def write_section(name: str, body: str, path: Path = BENCHMARKS_MD) -> None:
    """Replace the text between ``<!-- name:start -->`` and ``<!-- name:end -->`` (appending the
    section when absent), through a temporary file and a rename. Hand-written readings inside the
    section, between ``<!-- name:readings:start -->`` and ``<!-- name:readings:end -->``, are kept,
    after the new body: rerunning a benchmark with ``--write`` refreshes its figures without
    losing what was written about the runs before."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = path.read_text() if path.exists() else "# Benchmarks\n\nEach section is written by the benchmark it names; rerun it to refresh.\n"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    old = pattern.search(text)
    readings = re.compile(re.escape(f"<!-- {name}:readings:start -->") + r".*?" + re.escape(f"<!-- {name}:readings:end -->"), re.DOTALL)
    kept = readings.search(old.group(0)) if old else None
    block = f"{start}\n{body.strip()}\n" + (f"\n{kept.group(0)}\n" if kept else "") + end
    text = text[:old.start()] + block + text[old.end():] if old else text.rstrip() + "\n\n" + block + "\n"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def publish(name: str, text: str, write: bool) -> None:
    """Print a benchmark's section; with ``write`` also put it into BENCHMARKS.md (:func:`write_section`)."""
    print()
    print(text)
    if write:
        write_section(name, text)
        print(f"\nwrote the {name} section of BENCHMARKS.md")
