"""Interoperability with other VQGAN projects' checkpoints.

- :mod:`vqtk.io.safe_unpickle`: reading pickled torch checkpoints without
  running code from them (``weights_only`` first, then inert placeholders).
- :mod:`vqtk.interop.taming`: taming-transformers ``VQModel`` checkpoints to vqtk
  checkpoints and back (``vqtk convert taming`` / ``vqtk convert to-taming``);
  :mod:`vqtk.interop.taming_spec` and :mod:`vqtk.interop.taming_infer` describe
  the architecture from taming's YAML config or from the weights.
"""
