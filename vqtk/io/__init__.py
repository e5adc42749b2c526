"""Files in and out, below everything that builds or trains: checkpoints (safetensors, atomic,
checksummed), nested state without pickle, image grids and plots, and reading pickled
third-party checkpoints without running their code."""
