"""The detection cache: faces found in a file, keyed by the file's content and the detector settings.

Training meets every image once an epoch and re-indexing meets a gallery again; neither should
detect twice. An entry is keyed by the SHA-256 of the file's bytes (a renamed or copied photo is
the same entry; an edited one a new entry) and lives under the detector settings' key, so a run
with other settings never reads it::

    CACHE_DIR/                           RUN_DIR/faces/ or the index's folder (the caller says)
      <settings key>/<sha256>.json         image size, and per face its box, score, landmarks
      <settings key>/<sha256>.<crop key>.<i>.png   face i aligned (crop key: template and size)

Every file is written atomically; the JSON is written last, so an entry is whole once it is there.
An entry that cannot be read back (corrupt JSON, wrong shape, a missing or broken crop) is a miss:
the caller detects or aligns again and the entry is rewritten, with one warning line.

Face crops and landmarks are personal data: they stay inside the run or index folder that holds
the cache and go with it; :meth:`FaceCache.remove` deletes the entries of given files (a person
removed from a gallery) under every settings key.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from io import BytesIO
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from retrieval.errors import RetrievalError
from retrieval.faces.detect import Detection
from retrieval.run.store import read_json, write_atomic, write_json

__all__ = ["CACHE_FORMAT", "FaceCache", "is_digest"]

log = logging.getLogger("retrieval")

CACHE_FORMAT = 1
_DIGEST = re.compile(r"^[0-9a-f]{64}$")


def is_digest(value: object) -> bool:
    """Whether ``value`` is a SHA-256 as lower-case hex (what the cache is keyed by)."""
    return isinstance(value, str) and bool(_DIGEST.match(value))


class FaceCache:
    """Detections and aligned crops under ``folder / settings_key``, one entry per file content."""

    def __init__(self, folder: str | Path, settings_key: str, *, read_from: str | Path | None = None) -> None:
        if not re.fullmatch(r"[0-9a-f]{8,64}", settings_key):
            raise ValueError(f"settings_key must be hex, got {settings_key!r}")
        self.folder = Path(folder)
        self.settings_key = settings_key
        #: another cache folder (the run's own) whose entries this one copies on a miss and never writes:
        #: a command's scratch cache answers from what training and the index already found
        self.read_from = None if read_from is None else FaceCache(read_from, settings_key)
        #: the contents this object has written an entry or a crop of: what a command that fails
        #: half-way forgets again, unless an index or training refers to them (retrieval.index.build)
        self.written: set[str] = set()

    @property
    def entries_dir(self) -> Path:
        """Where this settings key's entries lie."""
        return self.folder / self.settings_key

    def entry_path(self, digest: str) -> Path:
        """The JSON file of the entry for content ``digest``."""
        return self.entries_dir / f"{_checked(digest)}.json"

    def crop_path(self, digest: str, crop_key: str, index: int) -> Path:
        """The PNG of face ``index`` of content ``digest``, aligned as ``crop_key`` says."""
        return self.entries_dir / f"{_checked(digest)}.{crop_key}.{int(index)}.png"

    def load(self, digest: str) -> list[Detection] | None:
        """The faces stored for ``digest`` (most confident first), or None when there is no whole entry."""
        path = self.entry_path(digest)
        if not path.is_file() and self.read_from is not None:
            self._copy_entry(digest)
        if not path.is_file():
            return None
        try:
            value = read_json(path)
            if not isinstance(value, dict) or value.get("format") != CACHE_FORMAT or value.get("sha256") != digest \
                    or value.get("settings") != self.settings_key or not isinstance(value.get("faces"), list):
                raise ValueError("not an entry of this cache")
            return [Detection.from_json(face) for face in value["faces"]]
        except (RetrievalError, ValueError, KeyError, TypeError, OSError) as error:
            log.warning("faces cache: %s unreadable (%s); detecting again", path.name, _one_line(error))
            return None

    def _copy_entry(self, digest: str) -> None:
        """Copy ``read_from``'s entry of ``digest`` (its crops, then its JSON, so that a present entry
        is whole) into this cache; nothing when it has none."""
        source = self.read_from
        entry = source.entry_path(digest)
        if not entry.is_file():
            return
        try:  # a scratch cache of one process: plain copies, the JSON last
            self.entries_dir.mkdir(parents=True, exist_ok=True)
            for path in sorted(source.entries_dir.glob(f"{_checked(digest)}.*.png")):
                shutil.copyfile(path, self.entries_dir / path.name)
            shutil.copyfile(entry, self.entry_path(digest))
        except OSError as error:  # the run's copy unreadable: detect again
            log.warning("faces cache: %s could not be copied (%s); detecting again", entry.name, _one_line(error))

    def store(self, digest: str, image_size: tuple[int, int], faces: Sequence[Detection]) -> None:
        """Write the entry of ``digest`` (after its crops, so a present entry is whole)."""
        self.written.add(_checked(digest))
        value = {"format": CACHE_FORMAT, "sha256": _checked(digest), "settings": self.settings_key,
                 "image_size": [int(image_size[0]), int(image_size[1])], "faces": [face.to_json() for face in faces]}
        write_json(self.entry_path(digest), value)

    def load_crop(self, digest: str, crop_key: str, index: int) -> Image.Image | None:
        """The stored crop as an RGB image, or None when it is missing or unreadable."""
        path = self.crop_path(digest, crop_key, index)
        if not path.is_file():
            return None
        try:
            with Image.open(path, formats=("PNG",)) as image:  # the crops are PNG: no other reader (issue 19)
                image.load()
                return image.convert("RGB")
        except (OSError, UnidentifiedImageError, ValueError) as error:
            log.warning("faces cache: %s unreadable (%s); aligning again", path.name, _one_line(error))
            return None

    def store_crop(self, digest: str, crop_key: str, index: int, crop: Image.Image) -> None:
        """Write one aligned crop as PNG."""
        self.written.add(_checked(digest))
        buffer = BytesIO()
        crop.save(buffer, format="PNG")
        write_atomic(self.crop_path(digest, crop_key, index), buffer.getvalue())

    def remove(self, digests: Iterable[str]) -> int:
        """Delete every entry and crop of these contents, under every settings key of the folder;
        the number of files deleted."""
        wanted = {_checked(d) for d in digests}
        if not wanted or not self.folder.is_dir():
            return 0
        removed = 0
        for settings_dir in (p for p in self.folder.iterdir() if p.is_dir()):
            for path in settings_dir.iterdir():
                if path.name.lstrip(".").split(".", 1)[0] in wanted:  # the entry, its crops, temporary files
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
                        removed += 1
        return removed


def _checked(digest: str) -> str:
    if not is_digest(digest):
        raise ValueError(f"not a SHA-256 hex digest: {digest!r}")
    return digest


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__
