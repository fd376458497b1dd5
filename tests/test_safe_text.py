"""retrieval.safe_text: labels and paths from files shown as text, never as markup or terminal codes,
and the CLI's tables (search, mining) and warnings through the real command line."""

import json
import shutil
import sys

import pytest
from rich.console import Console

import fake_runs
from retrieval.safe_text import markdown_text, printable, terminal_text

HOSTILE = ["shoes[/dim]", "[sale] shoes", "[bold]x[/bold]", "a\\[b", "back\\", "t\x1b]0;pwned\x07x", "rtl\u202egpj.exe",
           "two\nlines", "shoe :smile: :red_circle:", "![pic](http://127.0.0.1:9/x.png)", "**bold** _it_ `code` <img src=x> :red[red] $x^2$ # h",
           "# heading", "1) one", "22. two", "- item", "> quote", "= under", "snake_case_name.png", "_lead trail_", "a &amp; b"]


@pytest.mark.parametrize("text", HOSTILE)
def test_terminal_text_prints_exactly_the_printable_text_through_rich(text):
    console = Console(file=None, record=True, width=400, color_system=None)
    console.print(terminal_text(text))
    assert console.export_text().rstrip("\n") == printable(text)


def test_printable_writes_control_characters_as_their_escapes_and_keeps_the_rest():
    assert printable("t\x1b]0;pwned\x07x") == "t\\x1b]0;pwned\\x07x"
    assert printable("a\nb\tc\x7f\x9b") == "a\\nb\\tc\\x7f\\x9b"
    assert printable("rtl\u202egpj") == "rtl\\u202egpj" and printable("\u2028") == "\\u2028"
    assert printable("café 東京 👩‍👩‍👧 [x]") == "café 東京 👩‍👩‍👧 [x]"  # letters, emoji sequences (ZWJ) kept
    assert all(c.isprintable() or c == " " for text in HOSTILE for c in printable(text))


@pytest.mark.parametrize("text", HOSTILE)
def test_markdown_text_renders_as_the_same_text_with_no_markup(text):
    """Rendered by a CommonMark renderer (markdown-it, the one rich uses): one paragraph holding the
    printable text, no link, image, emphasis, code or HTML."""
    from markdown_it import MarkdownIt

    tokens = MarkdownIt("commonmark").parse(markdown_text(text))
    assert [t.type for t in tokens] == ["paragraph_open", "inline", "paragraph_close"]
    (inline,) = [t for t in tokens if t.type == "inline"]
    assert [child.type for child in inline.children] == ["text"]
    assert inline.children[0].content == printable(text)
    assert "$" not in markdown_text("$x$").replace("\\$", "") and ":" not in markdown_text(":red[x]").replace("\\:", "")


def test_markdown_text_keeps_ordinary_file_names_readable():
    assert markdown_text("banana_0.png") == "banana_0.png" and markdown_text("bottle-orange-star-000.png") == "bottle-orange-star-000.png"
    assert markdown_text("holiday.png: x") == "holiday.png\\: x"
