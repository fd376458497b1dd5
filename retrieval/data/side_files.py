"""Domain knowledge beside the images: CSV files of class groups and never-negative class pairs.

A class-groups file says which group each class belongs to (the apple varieties form the group
"Apple"): :func:`read_class_groups` reads it, :func:`class_group_ids` numbers the groups for the
P x K sampler (batches drawn from a few groups hold hard, look-alike negatives) and for
``NegativeRules``. A never-negative file lists pairs of classes that must never serve as each
other's negatives (two folders of one person): :func:`read_class_pairs`. Both read through
:func:`read_csv_rows`, which keeps the file's own line numbers, so every malformed row is
reported as one ``path:line: ...`` :class:`~retrieval.errors.RetrievalError`.
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path, PurePosixPath
from typing import Sequence

from retrieval.data.scan import brief_list
from retrieval.errors import RetrievalError

__all__ = ["read_class_groups", "read_class_pairs", "class_group_ids", "read_csv_rows", "normalise_column", "shown_field",
           "bad_rows_error", "csv_path_key", "image_lookup"]

logger = logging.getLogger("retrieval")

_CLASS_COLUMNS = ("class", "class_name", "fine_class", "fine_class_name", "fine", "name", "label", "identity")
_GROUP_COLUMNS = (
    "group", "group_name", "coarse_class_name", "coarse_class", "coarse", "coarse_name",
    "superclass", "super_class", "superclass_name", "super_class_name", "family", "category",
)
_PAIR_HEADERS = {"class_a", "class_b", "a", "b", "class1", "class2", "class_1", "class_2", "first", "second"}


def read_class_groups(csv_path: str | Path, class_names: Sequence[str], held_out: Sequence[str] = ()) -> dict[str, str]:
    """Read which group each class belongs to (e.g. the apple varieties form the group "Apple").

    The CSV has a header row; the class column is the first of ``class``, ``class_name``,
    ``fine_class``, ... present and the group column the first of ``group``, ``group_name``,
    ``coarse_class_name``, ``coarse_class``, ``coarse``, ``superclass``, ``family``,
    ``category`` (names compared case-insensitively, ``-`` and spaces read as ``_``); other
    columns are ignored, so the grocery data set's ``classes.csv`` works as it is. A file of two
    columns without a header (``class,group``) is accepted too. Blank lines and lines starting
    with ``#`` are skipped. Returns {class: group} for the classes in ``class_names``; classes of
    the file not in ``class_names`` are ignored, and classes without a group are named, each in
    one warning line (the data's classes ``held_out`` for validation are ignored without one: a
    file of every class names them). Raises :class:`RetrievalError` with the file name and line number for a
    malformed row (wrong number of fields, an empty value, a class given two groups).
    """
    path = Path(csv_path)
    rows = read_csv_rows(path)
    if not rows:
        raise RetrievalError(f"{path}: empty file, expected a header such as class,group")
    known = set(class_names)
    line, header = rows[0]
    columns = [normalise_column(value) for value in header]
    class_col = next((columns.index(c) for c in _CLASS_COLUMNS if c in columns), None)
    group_col = next((columns.index(c) for c in _GROUP_COLUMNS if c in columns), None)
    if class_col is None or group_col is None:
        if len(header) == 2 and header[0].strip() in known:
            class_col, group_col, n_fields, data = 0, 1, 2, rows
        else:
            raise RetrievalError(
                f"{path}:{line}: header must name a class column ({', '.join(_CLASS_COLUMNS[:3])}, ...) "
                f"and a group column ({', '.join(_GROUP_COLUMNS[:4])}, ...); got {','.join(header)}"
            )
    else:
        n_fields, data = len(header), rows[1:]

    groups: dict[str, str] = {}
    seen: dict[str, tuple[str, int]] = {}  # class -> (group, line), for every class of the file
    unknown: list[str] = []
    for line, row in data:
        if len(row) != n_fields:
            raise RetrievalError(f"{path}:{line}: expected {n_fields} fields, got {len(row)}: {','.join(row)}")
        name, group = row[class_col].strip(), row[group_col].strip()
        if not name or not group:
            raise RetrievalError(f"{path}:{line}: empty class or group")
        if name in seen:
            if seen[name][0] != group:
                raise RetrievalError(
                    f"{path}:{line}: class {name} is in group {group} here but in {seen[name][0]} on line {seen[name][1]}"
                )
            continue
        seen[name] = (group, line)
        if name in known:
            groups[name] = group
        else:
            unknown.append(name)
    return _finish_groups(path, class_names, groups, [name for name in unknown if name not in set(held_out)])


def read_class_pairs(csv_path: str | Path, class_names: Sequence[str], held_out: Sequence[str] = ()) -> list[tuple[str, str]]:
    """Read pairs of classes that must never be used as each other's negatives.

    One ``class_a,class_b`` pair a row (e.g. two folders that hold the same person, or an
    "unknown" identity); an optional header row (``class_a,class_b``), blank lines and ``#``
    lines are skipped. Returns the pairs in file order, each unordered pair once. Pairs naming a
    class not in ``class_names`` are dropped with one warning line. Raises
    :class:`RetrievalError` with the file name and line number for a row that is not two
    non-empty, different class names.
    """
    path = Path(csv_path)
    rows = read_csv_rows(path)
    if rows and {normalise_column(value) for value in rows[0][1]} <= _PAIR_HEADERS and len(rows[0][1]) == 2:
        rows = rows[1:]
    known = set(class_names)
    pairs: list[tuple[str, str]] = []
    seen: set[frozenset[str]] = set()
    unknown: list[str] = []
    for line, row in rows:
        if len(row) != 2:
            raise RetrievalError(f"{path}:{line}: expected class_a,class_b, got {len(row)} field(s): {','.join(row)}")
        a, b = row[0].strip(), row[1].strip()
        if not a or not b:
            raise RetrievalError(f"{path}:{line}: empty class name")
        if a == b:
            raise RetrievalError(f"{path}:{line}: a class cannot be its own never-negative pair ({a})")
        missing = [name for name in (a, b) if name not in known]
        if missing:
            unknown.extend(name for name in missing if name not in unknown)
            continue
        if frozenset((a, b)) not in seen:
            seen.add(frozenset((a, b)))
            pairs.append((a, b))
    unknown = [name for name in unknown if name not in set(held_out)]  # validation classes: never in a batch, not unknown
    if unknown:
        logger.warning("%s: pairs with %d classes not in the data are ignored: %s", path, len(unknown), brief_list(unknown))
    return pairs


def class_group_ids(class_names: Sequence[str], class_groups: dict[str, str]) -> list[int]:
    """Group id per class index, for :class:`PKSampler` and ``NegativeRules``.

    Classes sharing a group name share an id (ids numbered by sorted group name); a class
    without a group gets an id of its own.
    """
    names = sorted(set(class_groups.values()))
    ids = {name: i for i, name in enumerate(names)}
    out, next_id = [], len(names)
    for name in class_names:
        if name in class_groups:
            out.append(ids[class_groups[name]])
        else:
            out.append(next_id)
            next_id += 1
    return out


def read_csv_rows(path: Path, *, what: str = "CSV file") -> list[tuple[int, list[str]]]:
    """(line number, fields) of each non-blank, non-comment row of a UTF-8 CSV file (a comment: a
    line whose first character, spaces aside, is ``#`` as written; quote a value that begins with one).

    Line numbers are the file's own (1-based, counting blank and comment lines and the lines of
    quoted fields that span several), so callers can report ``path:line`` in their errors.
    Raises :class:`RetrievalError` for a missing file (``"<what> not found: <path>"``), a file
    that is not UTF-8 text, and malformed CSV (``"<path>:<line>: ..."``).
    """
    if path.is_dir():
        raise RetrievalError(f"{path} is a folder, not a {what}")
    if not path.is_file():
        raise RetrievalError(f"{what} not found: {path}")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:  # the offset is the file's: name the line (save the file as UTF-8)
        line = raw[:error.start].count(b"\n") + 1
        raise RetrievalError(f"{path}:{line}: not UTF-8 text ({error.reason}); save the file as UTF-8") from None
    rows: list[tuple[int, list[str]]] = []
    line = 1
    raw_lines = io.StringIO(text, newline="").readlines()  # as the reader counts them
    try:
        reader = csv.reader(io.StringIO(text, newline=""))
        for row in reader:
            # a comment is a line that begins with # as written: a quoted "#name.png" is a value
            comment = raw_lines[line - 1].lstrip().startswith("#")
            if row and any(value.strip() for value in row) and not comment:
                rows.append((line, row))
            line = reader.line_num + 1
    except csv.Error as error:
        raise RetrievalError(f"{path}:{line}: {error}") from None
    return rows


def shown_field(value: str, line: int) -> str:
    """A CSV value as an error message quotes it (``repr``). A value that runs over several lines is
    almost always a quote (") left open on line ``line``, which swallowed the lines after it: its
    first line is shown, with that said, rather than every line it swallowed."""
    lines = value.splitlines()
    if len(lines) < 2:
        return repr(value)
    return f"{lines[0]!r}… (a value running over {len(lines)} lines: is a quote (\") on line {line} left open?)"


def bad_rows_error(path: Path, bad: Sequence[tuple[int, str]]) -> RetrievalError:
    """One line for a CSV file's bad rows, ``bad`` = [(line, why)]: ``path:line: why`` for one, else
    how many, the first three with their lines, and how many more."""
    if len(bad) == 1:
        return RetrievalError(f"{path}:{bad[0][0]}: {bad[0][1]}")
    more = f"; and {len(bad) - 3} more" if len(bad) > 3 else ""
    return RetrievalError(f"{path}: {len(bad)} bad rows: " + "; ".join(f"line {n}: {why}" for n, why in bad[:3]) + more)


def csv_path_key(value: str, root: Path | None = None) -> str:
    """A path as written in a CSV (``/`` or ``\\``, a leading ``./``, or absolute inside ``root``),
    normalised to a posix path relative to ``root``."""
    text = value.strip().replace("\\", "/")
    if root is not None and Path(text).is_absolute():
        try:
            text = Path(text).resolve().relative_to(Path(root).resolve()).as_posix()
        except ValueError:
            return text
    parts = [p for p in PurePosixPath(text).parts if p not in (".", "")]
    return "/".join(parts)


def image_lookup(folder) -> tuple[dict[str, int], set[str]]:
    """A scanned folder's images by :func:`csv_path_key` (→ index into ``folder.paths``), and the keys
    of the image files its scan skipped as unreadable."""
    lookup = {csv_path_key(folder.relative_path(i)): i for i in range(len(folder.paths))}
    return lookup, {csv_path_key(p.relative_to(folder.root).as_posix()) for p in folder.skipped}


def normalise_column(name: str) -> str:
    """A CSV header cell as a column key: stripped, lower case, ``-`` and spaces as ``_``."""
    return name.strip().lower().replace("-", "_").replace(" ", "_")


def _finish_groups(path: Path, class_names: Sequence[str], groups: dict[str, str], unknown: list[str]) -> dict[str, str]:
    """{class: group} in ``class_names`` order, after one warning line each for the file's classes
    not in the data and for the data's classes without a group."""
    if unknown:
        logger.warning("%s: %d classes not in the data are ignored: %s", path, len(unknown), brief_list(unknown))
    missing = [name for name in class_names if name not in groups]
    if missing:
        logger.warning("%s: %d classes have no group (each is its own group): %s", path, len(missing), brief_list(missing))
    return {name: groups[name] for name in class_names if name in groups}
