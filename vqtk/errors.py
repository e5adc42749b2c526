"""Errors the user can fix (exit status 2), as opposed to bugs (exit status 1)."""

from __future__ import annotations

from typing import Iterable


class VqtkError(Exception):
    """Bad input: a recipe, an argument, a file or data the user can fix.

    The CLI prints each line of the message after ``vqtk: error:`` and exits
    with status 2, without a traceback.
    """

    exit_code = 2


class RecipeError(VqtkError):
    """One or more problems in a recipe, each ``dotted.path: message``."""

    def __init__(self, problems: Iterable[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class PluginError(VqtkError):
    """A plugin is broken (failed to import or register, or duplicates a name)."""


class MissingFileError(VqtkError):
    """A file the run needs (weights, data) is not on disk; the message says which and where."""
