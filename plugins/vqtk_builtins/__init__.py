"""vqtk's built-in components, shipped as an ordinary plugin.

The core finds this package only through its ``vqtk`` entry point (see
pyproject.toml), exactly as it finds third-party plugins. Each family package
(``autoencoders``, ``quantizers``...) keeps its modules (plain ``nn.Module``s)
apart from its ``builders.py`` (attrs configs and build functions), and has a
``register_components(register)`` that this hook calls. Heavy imports happen
inside build functions, so ``vqtk list`` stays fast.
"""

from __future__ import annotations

import importlib

from vqtk.registry import hookimpl

__version__ = "0.1.0"

FAMILIES = ("autoencoders", "quantizers", "discriminators", "losses", "data", "priors")


@hookimpl
def vqtk_register_components(register):
    for family in FAMILIES:
        try:
            module = importlib.import_module(f"{__name__}.{family}.builders")
        except ModuleNotFoundError as exc:
            if exc.name == f"{__name__}.{family}" or exc.name == f"{__name__}.{family}.builders":
                continue  # family not written yet
            raise
        module.register_components(register)
