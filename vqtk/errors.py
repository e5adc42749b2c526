"""Errors the user can fix (exit status 2), as opposed to bugs (exit status 1)."""

from __future__ import annotations

import unicodedata
from typing import Iterable


def printable(text: str, *, keep_newlines: bool = True) -> str:
    """``text`` with control characters escaped (``\\r``, ``\\x1b``...), so that a value
    quoted from a hostile file can neither split an error line nor drive the terminal."""
    out = []
    for ch in text:
        if ch == "\n" and keep_newlines or ch == "\t":
            out.append(ch)
        elif unicodedata.category(ch) in ("Cc", "Zl", "Zp"):
            out.append(ch.encode("unicode_escape").decode("ascii"))
        else:
            out.append(ch)
    return "".join(out)


class VqtkError(Exception):
    """Bad input: a recipe, an argument, a file or data the user can fix.

    The CLI prints each line of the message after ``vqtk: error:`` and exits
    with status 2, without a traceback. Control characters other than the
    line breaks between problems are escaped.
    """

    exit_code = 2

    def __init__(self, message: object = "", *args: object):
        super().__init__(printable(str(message)), *args)


class RecipeError(VqtkError):
    """One or more problems in a recipe, each ``dotted.path: message`` on one line."""

    def __init__(self, problems: Iterable[str]):
        self.problems = [printable(p, keep_newlines=False) for p in problems]
        super().__init__("\n".join(self.problems))


class PluginError(VqtkError):
    """A plugin is broken (failed to import or register, or duplicates a name)."""


class MissingFileError(VqtkError):
    """A file the run needs (weights, data) is not on disk; the message says which and where."""


class PluginBug(Exception):
    """An exception raised inside a plugin's code: a bug to report to the plugin's authors.

    Not a :class:`VqtkError`: the CLI exits with status 1 and prints the
    traceback (chained to the plugin's own exception), then one line naming the
    plugin and the pip distribution that installed it.
    """

    exit_code = 1

    def __init__(self, message: str, origin: str = ""):
        self.origin = origin
        super().__init__(printable(f"{message}" + (f" [bug in {origin}]" if origin else "")))
