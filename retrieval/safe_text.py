"""Text from files (class names, image paths, labels from a received index) made safe to show.

Class names and paths come from folder names and run files, which anyone may have written. Shown
as they are, they are read as markup: Rich's in the terminal (``shoes[/dim]`` raised a
``MarkupError``, ``[sale] shoes`` printed as `` shoes``), Markdown in the app (``![x](y.png)``
in a label made the browser fetch a picture); and control characters in a file name (an escape
sequence) reach the terminal. Three functions:

- :func:`printable`: control characters (C0, DEL, C1, the bidirectional overrides, the line and
  paragraph separators) written as their escape (``\\x1b``, ``\\u202e``), and so are lone surrogates:
  a byte of a file name that is not UTF-8, as Python reads it (``b"bad\\xffname.jpg"`` is
  ``"bad\\udcffname.jpg"``), shown as the byte (``bad\\xffname.jpg``) — as it is, it is not UTF-8
  text, and writing it to a terminal or sending it to a browser raised ``UnicodeEncodeError``;
  everything else kept;
- :func:`terminal_text`: :func:`printable` as a Rich ``Text`` (never parsed as markup or emoji
  codes; ``rich.markup.escape`` would still double a trailing backslash), for every label or path
  in a Rich table or title;
- :func:`markdown_text`: :func:`printable`, then backslash-escaped (CommonMark allows that for
  every ASCII punctuation character) where Markdown could read markup: always ``\\ ` * [ ] < > !
  $ : ~ | &`` (links, images, emphasis, code, HTML, entities, math, Streamlit's ``:red[...]``
  directives and ``:icon:`` codes, strikethrough, tables), ``_`` unless inside a word (where it
  cannot emphasise: ``banana_0.png`` stays readable), and a block marker at the start (``#``,
  ``>``, ``-``, ``+``, ``=``, ``1.``); for every label or path placed in Streamlit Markdown
  (``st.markdown``, captions, alerts, button labels, image captions).

:class:`PrintableStderrHandler` is the logging handler of the command line's warning lines: each
line :func:`printable`, on ``sys.stderr`` as it is when the line is logged.
"""

from __future__ import annotations

import logging
import re
import sys

__all__ = ["printable", "terminal_text", "markdown_text", "PrintableStderrHandler"]

_BIDI = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029" + _BIDI + "\ud800-\udfff]")
_MARKDOWN_SPECIAL = re.compile(r"([\\`*\[\]<>!$:~|&]|(?<![^\W_])_|_(?![^\W_]))")
_BLOCK_START = re.compile(r"^(\s*)([#>+=-]|\d+(?=[.)]))")


def printable(text: object) -> str:
    """``str(text)`` with each control character written as its Python escape (``\\n``, ``\\x1b``), and
    each lone surrogate as the byte it stands for (``\\udcff`` as ``\\xff``; one no byte stands for as ``\\ud800``)."""
    return _CONTROL.sub(_escape_control, str(text))


def terminal_text(text: object, style: str = ""):
    """``text`` for Rich (a table cell or title): a ``rich.text.Text`` of :func:`printable` text, in
    ``style``; Rich prints a Text as it is, without reading markup or ``:emoji:`` codes in it."""
    from rich.text import Text

    return Text(printable(text), style=style)


def markdown_text(text: object) -> str:
    """``text`` for Streamlit Markdown: control characters escaped, then what could be read as markup
    backslash-escaped, so no link, image, emphasis, directive (``:red[...]``), math or HTML forms from it."""
    escaped = _MARKDOWN_SPECIAL.sub(r"\\\1", printable(text))
    return _BLOCK_START.sub(_escape_block_start, escaped, count=1)


class PrintableStderrHandler(logging.StreamHandler):
    """Log records as :func:`printable` lines on ``sys.stderr`` as it is at each record (not as it was
    when the handler was made: in-process callers, tests among them, swap it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass

    def format(self, record: logging.LogRecord) -> str:
        return printable(super().format(record))


def _escape_block_start(match: re.Match) -> str:
    spaces, marker = match.group(1), match.group(2)
    return spaces + ("\\" + marker if not marker[0].isdigit() else marker + "\\")


def _escape_control(match: re.Match) -> str:
    character = match.group(0)
    if 0xDC80 <= ord(character) <= 0xDCFF:  # a byte that is not UTF-8, as surrogateescape holds it
        return f"\\x{ord(character) - 0xDC00:02x}"
    escaped = repr(character)[1:-1]  # '\n', '\x1b', '\u202e', '\ud800'
    return escaped if escaped != character else f"\\u{ord(character):04x}"
