"""Positive-only pairs (implicit feedback): training from a list of image pairs known to match
(``retrieval train DATA_DIR --pairs FILE``).

The pair file says which images show the same thing; it says nothing about the others. Linked
images are positives of each other, transitively (the connected components of the pair graph,
found by union-find: if a~b and b~c then a~c), and each component is trained as one class. An
unobserved pair is *missing*, not negative: two photos nobody paired may well show the same
product. So negatives are not read from the data but sampled by a strategy, ``--pair-negatives``:

- ``random`` (default): each batch holds P components drawn at random (K images of each, a P×K
  sampler with components as classes), and an anchor's negatives are the images of the other
  components in its batch. A random image is rarely a true match when there are many identities,
  so the few false negatives cost little: the safe choice.
- ``hard``: at the start of every epoch the training images are embedded with the current model
  and the components are grouped with their nearest *not-linked* components (the distance
  between two components is that of their nearest images); each batch is drawn from one such
  group (:class:`HardNegativeBatches`). The negatives are then the look-alikes the model confuses
  — more informative, but also more often unlabelled true matches (false negatives), so it helps
  when the pairs are dense and may hurt when they are sparse. Measure both (BENCHMARKS.md).

Domain rules filter the negatives of either strategy: ``--pair-groups FILE`` (``image,group``
rows) names groups of images that must never be each other's negatives (the same user's
uploads, one shop shelf, near-duplicates): two components with images in one group are never
negatives of each other in any loss or miner (a :class:`~retrieval.negatives.NegativeRules`
never-negative pair), and the hard strategy does not pick them as each other's neighbours.

The pair file is a CSV of two image paths per row, relative to ``DATA_DIR`` (optional header
``image_a,image_b``; blank lines and ``#`` comments skipped). Images in no pair are not trained on
(nor known negatives). When ``DATA_DIR`` has class folders, the validation classes are held out as
in labelled training and pairs that touch them are dropped (one warning): held-out metrics stay honest.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator

import numpy as np
import torch
from torch.utils.data import Sampler

from retrieval import data
from retrieval.data.sampler import fit_classes_per_batch
from retrieval.embed import embed_readable as embed_readable_here
from retrieval.errors import RetrievalError
from retrieval.negatives import NegativeRules
from retrieval.training.sources.base import check_negatives, hidden_label_split, without_labels_entries

__all__ = [
    "PAIR_NEGATIVES",
    "read_pairs",
    "read_image_groups",
    "UnionFind",
    "connected_components",
    "linked_folder",
    "never_negative_components",
    "component_distances",
    "hard_negative_groups",
    "HardNegativeBatches",
    "PairsSource",
]

log = logging.getLogger("retrieval")

PAIR_NEGATIVES = ("random", "hard")

_PAIR_HEADERS = {
    "image_a", "image_b", "image1", "image2", "image_1", "image_2", "path_a", "path_b", "a", "b",
    "first", "second", "left", "right", "query", "match", "anchor", "positive", "path1", "path2",
}
_GROUP_HEADERS = {"image", "path", "file", "group", "group_name", "session", "user", "source"}


# ----------------------------------------------------------------------------- reading


def read_pairs(csv_path: str | Path, folder: data.ImageFolder) -> list[tuple[int, int]]:
    """The pairs of ``csv_path`` as (i, j) indices into ``folder.paths``, i < j, each once, in file order.

    Paths are relative to ``folder.root`` (``/`` or ``\\`` separators, a leading ``./`` allowed;
    an absolute path inside the root works too). Raises :class:`RetrievalError` — one line, with
    the file name and line number, naming the first three bad rows and counting the rest — for a
    missing file, a row that is not two non-empty fields, or an image that is not in the folder. Pairs with an image that exists but cannot be read
    (the folder scan skipped it), and pairs of an image with itself, are dropped with one
    warning line each.
    """
    path = Path(csv_path)
    rows = data.read_csv_rows(path, what="pair file")
    if rows and len(rows[0][1]) == 2 and {data.normalise_column(v) for v in rows[0][1]} <= _PAIR_HEADERS:
        rows = rows[1:]
    lookup, unreadable = data.image_lookup(folder)
    pairs: list[tuple[int, int]] = []
    seen: set[tuple[int, int]] = set()
    dropped_unreadable, self_pairs, bad = [], 0, []
    for line, row in rows:
        if len(row) != 2:
            fields = ", ".join(data.shown_field(value, line) for value in row)
            bad.append((line, f"expected two image paths (image_a,image_b), got {len(row)} field(s): {fields}"))
            continue
        ends = []
        for value in row:
            value = value.strip()
            key = data.csv_path_key(value, folder.root) if value else None
            if key is None:
                bad.append((line, "empty image path"))
                break  # one reason a bad row
            elif key in lookup:
                ends.append(lookup[key])
            elif key in unreadable:
                ends.append(None)
            else:
                bad.append((line, f"unknown image {data.shown_field(value, line)}: no usable image under {folder.root}"))
                break
        if len(ends) < 2:
            continue
        if None in ends:
            dropped_unreadable.append(str(line))
            continue
        a, b = ends
        if a == b:
            self_pairs += 1
            continue
        pair = (min(a, b), max(a, b))
        if pair not in seen:
            seen.add(pair)
            pairs.append(pair)
    if bad:  # every bad row at once, in one line: a file with several typos is mended in one go
        raise data.bad_rows_error(path, bad)
    if dropped_unreadable:
        log.warning("%s: dropped %d pairs with an unreadable image (lines %s)", path, len(dropped_unreadable), data.brief_list(dropped_unreadable))
    if self_pairs:
        log.warning("%s: ignored %d pair(s) of an image with itself", path, self_pairs)
    return pairs


def read_image_groups(csv_path: str | Path, folder: data.ImageFolder) -> dict[int, str]:
    """``{image index: group}`` from an ``image,group`` CSV (``--pair-groups``): images of one group
    are never negatives of each other. Optional header, blank and ``#`` lines skipped; errors as in
    :func:`read_pairs` (one line with the line number); an image given two groups is an error."""
    path = Path(csv_path)
    rows = data.read_csv_rows(path, what="group file")
    if rows and len(rows[0][1]) == 2 and {data.normalise_column(v) for v in rows[0][1]} <= _GROUP_HEADERS:
        rows = rows[1:]
    lookup, unreadable = data.image_lookup(folder)
    groups: dict[int, str] = {}
    lines: dict[int, int] = {}
    for line, row in rows:
        if len(row) != 2:
            raise RetrievalError(f"{path}:{line}: expected image,group, got {len(row)} field(s): {','.join(row)}")
        image, group = row[0].strip(), row[1].strip()
        if not image or not group:
            raise RetrievalError(f"{path}:{line}: empty image or group")
        key = data.csv_path_key(image, folder.root)
        if key not in lookup:
            if key in unreadable:
                continue
            raise RetrievalError(f"{path}:{line}: unknown image {image!r}: no usable image with that path under {folder.root}")
        index = lookup[key]
        if index in groups and groups[index] != group:
            raise RetrievalError(f"{path}:{line}: {image} is in group {group} here but in {groups[index]} on line {lines[index]}")
        groups[index] = group
        lines[index] = line
    return groups


# ----------------------------------------------------------------------------- components


class UnionFind:
    """Disjoint sets over 0 … n−1 with path halving and union by size."""

    def __init__(self, n: int) -> None:
        self.parent = list(range(n))
        self.size = [1] * n

    def find(self, x: int) -> int:
        parent = self.parent
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(self, a: int, b: int) -> int:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return ra
        if self.size[ra] < self.size[rb]:
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.size[ra] += self.size[rb]
        return ra


def connected_components(n: int, pairs: Iterable[tuple[int, int]]) -> np.ndarray:
    """Component id per item 0 … n−1 of the graph with edges ``pairs``; ids are numbered by each
    component's smallest item (so the result does not depend on the order of the pairs)."""
    sets = UnionFind(n)
    for a, b in pairs:
        sets.union(int(a), int(b))
    roots = np.fromiter((sets.find(i) for i in range(n)), dtype=np.int64, count=n)
    _, first, inverse = np.unique(roots, return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    return rank[inverse.reshape(-1)]


def linked_folder(folder: data.ImageFolder, components: np.ndarray) -> data.ImageFolder:
    """The images of ``folder`` that belong to a component of two or more, labelled by component
    (re-numbered 0 … C−1, named ``component-NNNN``), sorted by component then path."""
    components = np.asarray(components)
    sizes = np.bincount(components, minlength=int(components.max()) + 1 if len(components) else 0)
    keep = np.flatnonzero(sizes[components] >= 2) if len(components) else np.zeros(0, np.int64)
    _, labels = np.unique(components[keep], return_inverse=True)
    order = np.lexsort((keep, labels))
    keep, labels = keep[order], labels.reshape(-1)[order]
    n_classes = int(labels.max()) + 1 if len(labels) else 0
    return data.ImageFolder(
        root=folder.root,
        paths=[folder.paths[i] for i in keep],
        labels=labels.tolist(),
        class_names=[f"component-{c:04d}" for c in range(n_classes)],
    )


def never_negative_components(labels: Sequence[int], image_groups: dict[int, str]) -> list[tuple[int, int]]:
    """Pairs of components (labels) with images in one never-negative group: (c1, c2), c1 < c2.

    ``labels[i]`` is the component of image i; ``image_groups`` maps an image index to its group.
    """
    members: dict[str, set[int]] = {}
    for image, group in image_groups.items():
        members.setdefault(group, set()).add(int(labels[image]))
    pairs: set[tuple[int, int]] = set()
    for components in members.values():
        ordered = sorted(components)
        for i, a in enumerate(ordered):
            for b in ordered[i + 1 :]:
                pairs.add((a, b))
    return sorted(pairs)


# ----------------------------------------------------------------------------- hard negatives


def component_distances(embeddings: np.ndarray | torch.Tensor, labels: Sequence[int], *, chunk: int = 2048) -> torch.Tensor:
    """(C, C) float32: the distance between components a and b is that of their nearest images,
    min d(x_i, x_j) over i in a, j in b (Euclidean on the unit rows given); +inf on the diagonal.
    Computed in row chunks, so memory is O(chunk · N + C²)."""
    x = torch.as_tensor(np.asarray(embeddings), dtype=torch.float32)
    labels_t = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    n_classes = int(labels_t.max()) + 1 if len(labels_t) else 0
    out = torch.full((n_classes, n_classes), float("inf"))
    for start in range(0, len(x), chunk):
        rows = torch.cdist(x[start : start + chunk], x)  # (n, N)
        per_class = torch.full((len(rows), n_classes), float("inf")).scatter_reduce(
            1, labels_t.expand(len(rows), -1), rows, reduce="amin"
        )  # (n, C): nearest image of each component
        out.scatter_reduce_(0, labels_t[start : start + chunk, None].expand(-1, n_classes), per_class, reduce="amin")
    out.fill_diagonal_(float("inf"))
    return out


def hard_negative_groups(
    distances: torch.Tensor,
    group_size: int,
    rng: np.random.Generator,
    never_negative: Iterable[tuple[int, int]] = (),
) -> np.ndarray:
    """Group id per component: each group is a component (taken in random order) and its
    ``group_size − 1`` nearest components not yet grouped, never a never-negative partner
    (``distances`` from :func:`component_distances`; a component is never its own negative).
    The last groups may be smaller."""
    d = distances.clone().numpy().astype(np.float64)
    np.fill_diagonal(d, np.inf)
    for a, b in never_negative:
        d[a, b] = d[b, a] = np.inf
    n = len(d)
    group = np.full(n, -1, dtype=np.int64)
    next_id = 0
    for seed in rng.permutation(n):
        if group[seed] >= 0:
            continue
        row = np.where(group < 0, d[seed], np.inf)
        row[seed] = np.inf
        order = np.argsort(row, kind="stable")
        mates = [c for c in order[: group_size - 1] if np.isfinite(row[c])]
        group[[seed, *mates]] = next_id
        next_id += 1
    return group


class HardNegativeBatches(Sampler[list[int]]):
    """P×K batches (components as classes) whose P components are each other's nearest not-linked
    components under the current model (``--pair-negatives hard``).

    ``embed()`` returns unit embeddings (N, D) of the dataset's items; it is called by
    :meth:`set_epoch`, before each epoch, and the components are then grouped by
    :func:`hard_negative_groups` (seeded by (seed, epoch)) and drawn a group per batch by a
    :class:`~retrieval.data.PKSampler` with those class groups. The number of batches per epoch
    is that of the plain P×K sampler. The batches of an epoch depend only on (seed, epoch) and
    the model's weights at its start, so a resumed run repeats them.
    """

    def __init__(
        self,
        labels: Sequence[int],
        classes_per_batch: int,
        images_per_class: int,
        *,
        seed: int,
        embed: Callable[[], np.ndarray],
        never_negative: Iterable[tuple[int, int]] = (),
    ) -> None:
        self.labels = np.asarray(labels, dtype=np.int64)
        self.base = data.PKSampler(self.labels, classes_per_batch, images_per_class, seed=seed)
        self.classes_per_batch = int(classes_per_batch)
        self.images_per_class = int(images_per_class)
        self.seed = int(seed)
        self.embed = embed
        self.never_negative = list(never_negative)
        self.epoch = 0
        self.groups: np.ndarray | None = None
        self._current: data.PKSampler | None = None

    def __len__(self) -> int:
        return len(self.base)

    def set_epoch(self, epoch: int) -> None:
        """Embed the training images with the current model and regroup the components for ``epoch``."""
        self.epoch = int(epoch)
        distances = component_distances(self.embed(), self.labels)
        rng = np.random.default_rng([self.seed, self.epoch, 7])
        self.groups = hard_negative_groups(distances, self.classes_per_batch, rng, self.never_negative)
        self._current = data.PKSampler(
            self.labels, self.classes_per_batch, self.images_per_class, seed=self.seed,
            class_groups=self.groups.tolist(), groups_per_batch=1,
        )
        self._current.set_epoch(self.epoch)

    def __iter__(self) -> Iterator[list[int]]:
        if self._current is None:
            self.set_epoch(self.epoch)
        yield from self._current


# ----------------------------------------------------------------------------- the source


@dataclass
class PairsSource:
    """The images linked by the pair file, one pseudo-class per connected component."""

    folder: data.ImageFolder
    train_folder: data.ImageFolder  # the linked images, labelled by component
    val_folder: data.ImageFolder
    rules: NegativeRules | None  # never-negative component pairs from --pair-groups
    never_negative: list[tuple[int, int]]
    strategy: str  # --pair-negatives
    classes_per_batch: int
    images_per_class: int
    augment: float
    seed: int
    entries: dict[str, Any]
    greyscale: bool = False  # every image of DATA_DIR is stored grey
    mode: ClassVar[str] = "pairs"

    @classmethod
    def from_config(cls, config) -> "PairsSource":
        """The ``--pairs`` training data for a :class:`~retrieval.training.TrainConfig`."""
        folder, train_part, val_folder = hidden_label_split(config.data_dir, config.val_fraction, config.seed)
        pairs, n_held_out = _training_pairs(config, folder, val_folder)
        side_files = _side_file_digests(config)  # before any check a changed file could fail
        components = connected_components(len(folder.paths), pairs)
        train_folder = linked_folder(folder, components)
        n_components = len(train_folder.class_names)
        if n_components < 2:
            raise RetrievalError(f"{config.pairs}: the pairs link all their images into 1 group; negatives come from other groups, "
                                 "so at least 2 are needed")
        classes_per_batch = fit_classes_per_batch(config.classes_per_batch, n_components, typed="classes_per_batch" in config.given,
                                                  what=f"groups of linked images (connected components) in {config.pairs}")
        never = _never_negative(config, folder, train_folder)
        rules = NegativeRules(never_negative=never) if never else None
        if rules is not None:
            check_negatives(rules, train_folder.class_names, f"groups of images linked by {config.pairs}",
                            "--pair-groups puts them in one group with every other linked group", loss=config.loss, miner=config.miner)
        sizes = np.bincount(np.asarray(train_folder.labels))
        n_trainable = len(folder.paths) - n_held_out
        entries = {
            "train_classes": list(train_part.class_names),
            "pairs_file": str(Path(config.pairs).resolve()),
            "pair_negatives": config.pair_negatives,
            "pair_groups": None if config.pair_groups is None else str(Path(config.pair_groups).resolve()),
            "n_pairs": len(pairs),
            "n_components": n_components,
            "largest_component": int(sizes.max()),
            "n_linked_images": len(train_folder.paths),
            "n_unlinked_images": n_trainable - len(train_folder.paths),
            "n_never_negative_component_pairs": len(never),
            **side_files,
            "pseudo_labels": "component",
        }
        if entries["n_unlinked_images"]:  # a warning, so that the CLI shows it: unlike a labelled folder, not every image trains
            log.warning("%s links %d of the %d training images in %d groups; the other %d are in no pair and are not trained on, not even "
                        "as negatives", config.pairs, entries["n_linked_images"], n_trainable, n_components, entries["n_unlinked_images"])
        return cls(folder, train_folder, val_folder, rules, never, config.pair_negatives, classes_per_batch,
                   config.images_per_class, config.augment, config.seed, entries, greyscale=data.all_greyscale(folder.paths))

    def make_train_transform(self, data_config: dict[str, Any], *, normalise_in_batch: bool = False) -> data.ImageTransform:
        return data.build_transforms(data_config, train=True, strength=self.augment, normalise_in_batch=normalise_in_batch)

    def make_sampler(self, *, model=None, transform=None, device="cpu", precision="fp32", embed_readable=None, **_: Any):
        """A P×K sampler over the components (``random``), or :class:`HardNegativeBatches` (``hard``)."""
        labels = self.train_folder.labels
        if self.strategy == "random":
            return data.PKSampler(labels, self.classes_per_batch, self.images_per_class, seed=self.seed)
        embed_readable = embed_readable or embed_readable_here
        paths = self.train_folder.paths

        def embed() -> np.ndarray:
            was_training = model.training
            try:
                # one set of rows for every process under torchrun (retrieval.embed.embed_readable with the run's DistributedContext):
                # each regrouping the components from its own GPU's rounding could draw other batches
                rows, kept = embed_readable(model, paths, transform, batch_size=256, device=device, precision=precision)
            finally:
                model.train(was_training)
            # an image that cannot be decoded (the loader warns, and leaves it out) gets a row of zeros: at distance 1 from all
            every = np.zeros((len(paths), rows.shape[1]), dtype=rows.dtype)
            every[kept] = rows
            return every

        return HardNegativeBatches(labels, self.classes_per_batch, self.images_per_class, seed=self.seed,
                                   embed=embed, never_negative=self.never_negative)

    def config_entries(self) -> dict[str, Any]:
        return {**without_labels_entries(self.mode, self.val_folder), **self.entries}


def _side_file_digests(config) -> dict[str, str | None]:
    """The SHA-256 of the pair file and of the --pair-groups file (config.json's ``pairs_sha256``,
    ``pair_groups_sha256``); a ``--resume`` whose files changed since the run started is refused in
    one line (its components, and so its labels and batches, would no longer be the run's)."""
    from retrieval.run import read_config, sha256_file

    # the pair file was read whole just before; a missing groups file is left to read_image_groups' error
    groups = config.pair_groups
    digests = {"pairs_sha256": sha256_file(config.pairs),
               "pair_groups_sha256": sha256_file(groups) if groups is not None and Path(groups).is_file() else None}
    if config.resume:
        started = read_config(config.out)
        for key, flag, path in (("pairs_sha256", "--pairs", config.pairs), ("pair_groups_sha256", "--pair-groups", config.pair_groups)):
            if started.get(key) is not None and started.get(key) != digests[key]:
                raise RetrievalError(f"{path} ({flag}) has changed since {config.out} started: a resume trains on the "
                                     "file it started with; put that back, or train a new run on this one")
    return digests


def _training_pairs(config, folder: data.ImageFolder, val_folder: data.ImageFolder) -> tuple[list[tuple[int, int]], int]:
    """The pair file's pairs outside the held-out validation classes, and how many images those hold."""
    pairs = read_pairs(config.pairs, folder)
    if not pairs:
        raise RetrievalError(f"{config.pairs}: the file holds no pair of two readable images (rows of image_a,image_b)")
    held_out: set[int] = set()
    if val_folder.paths:
        index_of = {p: i for i, p in enumerate(folder.paths)}
        held_out = {index_of[p] for p in val_folder.paths}
        kept = [(a, b) for a, b in pairs if a not in held_out and b not in held_out]
        if len(kept) < len(pairs):
            log.warning("%s: dropped %d of %d pairs that touch the %d held-out validation classes", config.pairs,
                        len(pairs) - len(kept), len(pairs), len(val_folder.class_names))
        pairs = kept
    if not pairs:
        raise RetrievalError(f"{config.pairs}: no pairs to train on outside the {len(val_folder.class_names)} held-out "
                             "validation classes (every pair touches one; lower --val-fraction)")
    return pairs, len(held_out)


def _never_negative(config, folder: data.ImageFolder, train_folder: data.ImageFolder) -> list[tuple[int, int]]:
    """The never-negative component pairs that ``--pair-groups`` implies ([] without the file)."""
    if config.pair_groups is None:
        return []
    linked_index = {p: i for i, p in enumerate(train_folder.paths)}
    groups = read_image_groups(config.pair_groups, folder)
    by_train_index = {linked_index[folder.paths[i]]: g for i, g in groups.items() if folder.paths[i] in linked_index}
    return never_negative_components(train_folder.labels, by_train_index)
