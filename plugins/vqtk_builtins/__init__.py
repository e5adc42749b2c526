"""vqtk's built-in components, shipped as an ordinary plugin.

The core finds this package only through its ``vqtk`` entry point (see
pyproject.toml), exactly as it finds third-party plugins. Each family package
(``autoencoders``, ``quantizers``...) holds one module per component (plain
keyword-only ``nn.Module`` classes whose signatures are their recipe schemas)
and a ``register_components(register)`` in its ``__init__`` that this hook
calls. Heavy libraries (vector-quantize-pytorch, x-transformers, lpips,
scikit-image) are imported when a component is built, so ``vqtk list`` stays fast.
"""

from __future__ import annotations

import importlib

from vqtk.registry import hookimpl

__version__ = "0.2.0"

FAMILIES = ("autoencoders", "quantizers", "discriminators", "losses", "data", "priors")


@hookimpl
def vqtk_register_components(register):
    for family in FAMILIES:
        importlib.import_module(f"{__name__}.{family}").register_components(register)


@hookimpl
def vqtk_register_converters(register):
    importlib.import_module(f"{__name__}.converters").register_converters(register)
