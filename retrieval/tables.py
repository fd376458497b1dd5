"""The terminal tables of ``retrieval mining`` and ``retrieval confusions``, readable at 100 columns.

Each cell is cut with an ellipsis where it does not fit, never wrapped: a wrapped label or path
turned one triplet into several half-rows that looked like duplicates. A cell shows a class and a
file name (its folder is the class; the full paths relative to the data or gallery folder are in
``--json``). Every label and path goes through :func:`retrieval.safe_text.terminal_text`, so a
name from a received run is shown as it is, never read as markup.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import PurePosixPath
from typing import Any

from rich import box
from rich.table import Table
from rich.text import Text

from retrieval.diagnostics import mined_status
from retrieval.safe_text import terminal_text

__all__ = ["mining_table", "confused_pairs_table", "nearest_other_table"]


def mining_table(rows: Sequence[Mapping[str, Any]], *, title: str, margin: float, width: int = 100) -> Table:
    """Logged triplets, hardest first: anchor (class, file), positive (file), negative (class,
    file), d_ap, d_an, d_an − d_ap (red below 0, the negative nearer than the positive; yellow
    below ε) and whether the miner kept it (``-``: not recorded); ``width``: the terminal's."""
    table = _table(title)
    _columns(table, width, [("#", "right"), ("anchor", "left"), ("positive", "left"), ("negative", "left"), ("d_ap", "right"),
                            ("d_an", "right"), ("d_an−d_ap", "right"), ("mined", "left")])
    for rank, row in enumerate(rows, 1):
        gap = float(row["d_an_minus_d_ap"])
        style = "red" if gap < 0 else ("yellow" if gap < margin else "")
        status = mined_status(row)
        table.add_row(str(rank), _labelled(row, "anchor"), terminal_text(_logged_name(row, "positive"), "dim"),
                      _labelled(row, "negative"), f"{float(row['d_ap']):.3f}", f"{float(row['d_an']):.3f}",
                      Text(f"{gap:+.3f}", style=style), {"mined": "yes", "not mined": "no"}.get(status, "-"))
    return table


def confused_pairs_table(pairs: Sequence[Mapping[str, Any]], *, title: str, width: int = 100) -> Table:
    """:func:`retrieval.confusions.gallery_confusions`' pairs: the two classes, rank-1 confusions
    between them, items whose nearest negative lies in the other class, and the closest such pair."""
    table = _table(title)
    _columns(table, width, [("class A", "left"), ("class B", "left"), ("rank-1", "right"), ("nearest neg.", "right"),
                            ("closest: A item", "left"), ("B item", "left"), ("d", "right")])
    for pair in pairs:
        closest = pair["closest"]
        first, second = (closest["item"], closest["other"]) if closest["label"] == pair["classes"][0] else (closest["other"], closest["item"])
        table.add_row(terminal_text(pair["classes"][0]), terminal_text(pair["classes"][1]), str(pair["confused"]),
                      str(pair["nearest_negative"]), terminal_text(_name(first), "dim"), terminal_text(_name(second), "dim"),
                      f"{closest['distance']:.3f}")
    return table


def nearest_other_table(classes: Sequence[Mapping[str, Any]], *, title: str, width: int = 100) -> Table:
    """For each class, its items nearest to another class: the item, that other item (class,
    file), their distance d_an and the item's nearest same-class distance d_ap."""
    table = _table(title)
    _columns(table, width, [("class", "left"), ("rank-1", "right"), ("item", "left"), ("nearest other-class item", "left"),
                            ("d_an", "right"), ("d_ap", "right")])
    for entry in classes:
        for number, link in enumerate(entry["nearest_other"]):
            compared = entry.get("n_with_positive", entry["n_items"])  # items with a same-class item
            rank_1 = f"{entry['confused']}/{compared}" if compared else "-"
            head = (terminal_text(entry["class"]), rank_1) if number == 0 else ("", "")
            positive = link["positive_distance"]
            table.add_row(*head, terminal_text(_name(link["item"]), "dim"),
                          Text.assemble(terminal_text(link["other_label"]), " ", terminal_text(_name(link["other"]), "dim")),
                          f"{link['distance']:.3f}", "-" if positive is None else f"{positive:.3f}")
    return table


def _table(title: str) -> Table:
    return Table(title=terminal_text(title), box=box.SIMPLE_HEAD, pad_edge=False, title_justify="left", collapse_padding=True)


def _columns(table: Table, width: int, columns: list[tuple[str, str]]) -> None:
    """Add the columns (name, justify: "right" for numbers). Number columns keep their header's
    width and at least 6 characters ("+0.123"), so a number and its header are never cut; text
    columns share what they leave of ``width`` and cut their cells with an ellipsis (Rich does not
    shrink a column that may not wrap)."""
    numbers = [name for name, justify in columns if justify == "right"]
    texts = len(columns) - len(numbers)
    spare = width - 2 * len(columns) - sum(_number_width(name) for name in numbers)
    text_width = max(6, spare // max(texts, 1) + 1)  # padding collapses between columns: one more fits
    for name, justify in columns:
        numeric = justify == "right"
        table.add_column(name, justify=justify, no_wrap=True, overflow="ellipsis", max_width=None if numeric else text_width,
                         min_width=_number_width(name) if numeric else None)


def _number_width(name: str) -> int:
    return max(len(name), 2 if name == "#" else 6)  # a rank, or a distance such as "+0.123"


def _labelled(row: Mapping[str, Any], role: str) -> Text:
    return Text.assemble(terminal_text(row[f"{role}_label"]), "\n", terminal_text(_logged_name(row, role), "dim"))


def _logged_name(row: Mapping[str, Any], role: str) -> str:
    """A logged image's file name: for a face run's crop, the name of the photo it was cut from where known."""
    return _name(row.get(f"{role}_photo") or row[f"{role}_path"])


def _name(path: str) -> str:
    return PurePosixPath(str(path)).name or str(path)
