"""Names escaped for the format they are written into.

File names, class-folder names, a checkpoint's stored class names, OOD set names and run labels
come from users' files and configs. Every writer passes them through the function for its format
here, so that a name is shown as written and never becomes a spreadsheet formula, a TeX macro,
Markdown/HTML, rich markup, mathtext or a terminal control sequence.
"""

from __future__ import annotations

import csv
import io
import unicodedata
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from rich.text import Text

T = TypeVar("T")

# a spreadsheet reads a cell starting with one of these as a formula (OWASP, "CSV Injection")
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

# characters that reorder the text around them on screen (bidirectional overrides and isolates)
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f")


def _is_control(char: str) -> bool:
    return unicodedata.category(char) == "Cc" or char in BIDI_CONTROLS


def csv_cell(value: T) -> T | str:
    """A CSV cell a spreadsheet shows as text: a string starting with ``=``, ``+``, ``-``, ``@``, tab
    or carriage return gets a leading ``'`` (OWASP's rule). Numbers and ``None`` are returned as they
    are, so a negative score stays a number; only text fields are ever prefixed."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def csv_lines(rows: Iterable[Sequence[object]]) -> str:
    """Rows as CSV text with ``\\n`` line ends. A row holding a carriage return in a cell is written
    with every cell quoted: unquoted, a reader takes that character for the end of the row. Callers
    pass text cells through :func:`csv_cell` first (numbers must not be)."""
    out = io.StringIO()
    plain = csv.writer(out, lineterminator="\n")
    quoted = csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_ALL)
    for row in rows:
        (quoted if any(isinstance(c, str) and "\r" in c for c in row) else plain).writerow(row)
    return out.getvalue()


_LATEX = {
    "\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "$": r"\$", "&": r"\&", "#": r"\#", "%": r"\%",
    "_": r"\_", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",  # ^^5c is TeX's notation for \
    "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}",
    "±": r"$\pm$", "λ": r"$\lambda$", "Δ": r"$\Delta$", "↓": r"$\downarrow$", "↑": r"$\uparrow$",
    "−": "$-$", "×": r"$\times$",
}


def latex(text: str) -> str:
    """``text`` as LaTeX that typesets those characters: every special character (``\\ { } $ & # %
    _ ~ ^``, so ``^^5c`` cannot become a backslash) replaced in one pass, control characters
    (newlines included: a blank line ends a caption) as spaces, and the table's few symbols as math."""
    return "".join(" " if _is_control(c) else _LATEX.get(c, c) for c in text)


_MARKDOWN = {"\\": "\\\\", "|": "\\|", "`": "\\`", "[": "\\[", "]": "\\]", "$": "\\$",
             "&": "&amp;", "<": "&lt;", ">": "&gt;"}


def markdown(text: str) -> str:
    """``text`` as one Markdown table cell or heading: pipes (a new column), backslashes, backticks
    (code), brackets (links and images) and ``$`` (math on GitHub) backslash-escaped, ``& < >`` as
    HTML entities (no tag renders), control characters (newlines: a new row) as spaces. Emphasis
    characters (``* _``) are left: they can change a name's type face, not the table."""
    return "".join(" " if _is_control(c) else _MARKDOWN.get(c, c) for c in text)


def printable(text: str) -> str:
    """``text`` for a terminal: control characters (escape sequences, carriage returns, newlines)
    and bidirectional overrides shown as Python escapes (``\\x1b``), everything else as it is."""
    return "".join(c.encode("unicode_escape").decode("ascii") if _is_control(c) else c for c in text)


def rich_text(text: str, style: str = "") -> Text:
    """``text`` as a rich :class:`~rich.text.Text`: printed as written, never read as markup
    (``[bold]``, ``[/]``) or emoji codes, with control characters made :func:`printable`."""
    from rich.text import Text

    return Text(printable(text), style=style)


def mathtext(text: str, legend: bool = False) -> str:
    """``text`` for a matplotlib title or label, drawn as written: every ``$`` escaped (a pair would
    start mathtext, and mathtext it cannot parse raises when the figure is drawn). For a legend label
    (``legend``), a leading ``_`` gets a space before it: a legend silently leaves out such labels."""
    text = text.replace("$", r"\$")
    return " " + text if legend and text.startswith("_") else text
