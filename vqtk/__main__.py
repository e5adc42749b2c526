"""``python -m vqtk`` (also what ``torchrun -m vqtk`` runs)."""

from vqtk.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
