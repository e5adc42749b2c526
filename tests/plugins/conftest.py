"""Fixtures shared by the plugin tests; a file opts in with ``pytestmark = pytest.mark.usefixtures(...)``."""

from __future__ import annotations

import urllib.request

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """These tensors and models are tiny: with other processes on the 2 cores, a second
    intra-op thread makes each step up to 30x slower (spinning OpenMP workers)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def empty_hub_dir(tmp_path, monkeypatch):
    """Every test sees an empty torch hub cache, whatever the machine holds."""
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "_hub_dir", str(hub))
    return hub


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to download fails the test loudly."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[:1]}")

    import torchvision.models._api as tv_api

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(tv_api, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
