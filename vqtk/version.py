"""The package version, importable from every layer (``vqtk.__version__`` re-exports it)."""

__version__ = "0.2.0"
