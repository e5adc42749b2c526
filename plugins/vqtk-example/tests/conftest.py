"""Lets the tests import the plugin from this folder without installing it (``pip install -e .`` also works)."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
torch.set_num_threads(1)


@pytest.fixture
def registry():
    import vqtk_example

    from vqtk import testing

    return testing.registry_with(vqtk_example)  # vqtk's built-ins + this plugin
