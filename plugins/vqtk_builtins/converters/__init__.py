"""Built-in checkpoint converters (``vqtk convert NAME``), registered through ``vqtk_register_converters``.

- ``taming``: taming-transformers VQGAN checkpoints <-> vqtk checkpoints
  (:mod:`.taming`: the converter; :mod:`.taming_convert`: import and export;
  :mod:`.taming_state`: reading the pickles and mapping tensor names;
  :mod:`.taming_spec`, :mod:`.taming_yaml`, :mod:`.taming_infer`,
  :mod:`.taming_recipe`: the architecture from taming's YAML, from the weights,
  and to and from vqtk recipes).
- ``var``: VAR's multi-scale VQVAE (``vae_ch160v4096z32.pth``) <-> vqtk checkpoints
  (:mod:`.var`: the converter; :mod:`.var_convert`: import, export and the recipe;
  :mod:`.var_state`: reading the file and mapping tensor names).
"""

from __future__ import annotations

from vqtk_builtins.converters.llamagen import LlamaGenConverter
from vqtk_builtins.converters.taming import TamingConverter
from vqtk_builtins.converters.var import VarConverter


def register_converters(register) -> None:
    register(TamingConverter())
    register(LlamaGenConverter())
    register(VarConverter())
