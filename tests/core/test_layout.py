"""Token layouts (grid, depth, scales): shapes, split/join, errors, and the core paths indices flow through."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from toy_plugin import ToyDecoder, ToyEncoder

from vqtk.build import check_prior_fits, probe_shapes
from vqtk.cli import main
from vqtk.errors import VqtkError
from vqtk.evaluation.loop import evaluate
from vqtk.interfaces import (
    LAYOUT_KINDS,
    Prior,
    PriorOutput,
    Quantizer,
    QuantizerOutput,
    TokenLayout,
    check_layout_supported,
)
from vqtk.measure import code_histogram, code_ids
from vqtk.model import VQGAN
from vqtk.testing import check_quantizer
from vqtk.train.code_cache import encode_dataset, load_or_encode
from vqtk.train.codebook_health import CodebookHealth
from vqtk.train.metadata import layout_metadata, read_layout

SCALES = ((1, 1), (2, 2), (4, 4))
MULTI = TokenLayout.multiscale([1, 2, (4, 4)])


# -- TokenLayout -----------------------------------------------------------------------------


def test_kinds_shapes_and_token_counts():
    assert LAYOUT_KINDS == ("grid", "depth", "scales")
    grid, depth = TokenLayout.grid(), TokenLayout.with_depth(3)
    assert TokenLayout.with_depth(1) == grid and depth.kind == "depth" and depth.depth == 3
    assert MULTI.scales == SCALES
    assert grid.index_shape(2, (4, 5)) == (2, 4, 5)
    assert depth.index_shape(2, (4, 5)) == (2, 4, 5, 3)
    assert MULTI.index_shape(2, (4, 4)) == (2, 21)
    assert (grid.tokens((4, 5)), depth.tokens((4, 5)), MULTI.tokens((4, 4))) == (20, 60, 21)
    assert grid.describe() == "a grid with one index per position"
    assert depth.describe() == "a grid with 3 indices per position"
    assert TokenLayout.multiscale([1, (2, 3)]).describe() == "2 scales (1, 2x3)"


def test_split_join_round_trip_for_every_layout():
    g = torch.Generator().manual_seed(0)
    cases = [(TokenLayout.grid(), (2, 3, 4)), (TokenLayout.with_depth(3), (2, 3, 4, 3)), (MULTI, (2, 21))]
    for layout, shape in cases:
        indices = torch.randint(0, 50, shape, generator=g)
        parts = layout.split(indices)
        assert torch.equal(layout.join(parts), indices), layout.kind
    depth_parts = TokenLayout.with_depth(3).split(torch.arange(72).view(2, 3, 4, 3))
    assert [p.shape for p in depth_parts] == [(2, 3, 4)] * 3 and int(depth_parts[1][0, 0, 0]) == 1
    flat = torch.arange(42).view(2, 21)
    parts = MULTI.split(flat)
    assert [tuple(p.shape) for p in parts] == [(2, 1, 1), (2, 2, 2), (2, 4, 4)]
    # coarse to fine, each scale row-major
    assert parts[0].flatten().tolist() == [0, 21] and parts[1][0].flatten().tolist() == [1, 2, 3, 4]
    assert parts[2][1, 0].tolist() == [26, 27, 28, 29]


def test_per_codebook_rows():
    idx = torch.arange(24).view(1, 2, 3, 4)
    rows = TokenLayout.with_depth(4).per_codebook(idx)
    assert rows.shape == (4, 6) and rows[1].tolist() == [1, 5, 9, 13, 17, 21]
    assert TokenLayout.grid().per_codebook(torch.zeros(2, 3, 3, dtype=torch.long)).shape == (1, 18)
    assert MULTI.per_codebook(torch.zeros(2, 21, dtype=torch.long)).shape == (1, 42)
    with pytest.raises(ValueError, match=r"expected indices \(B, h, w, 4\), got shape \(1, 2, 3\)"):
        TokenLayout.with_depth(4).per_codebook(torch.zeros(1, 2, 3))


def test_bad_layouts_and_bad_indices_are_refused():
    with pytest.raises(ValueError):
        TokenLayout("tree")
    with pytest.raises(ValueError, match="at least 2 indices"):
        TokenLayout("depth", depth=1)
    with pytest.raises(ValueError, match="only applies to the depth layout"):
        TokenLayout("grid", depth=2)
    with pytest.raises(ValueError, match="exactly for the scales layout"):
        TokenLayout("scales")
    with pytest.raises(ValueError, match="at least 1x1"):
        TokenLayout.multiscale([0, 2])
    with pytest.raises(VqtkError, match=r"\(2, 20\) do not hold 3 scales \(1, 2, 4\) \(expected \(B, 21\)\)"):
        MULTI.split(torch.zeros(2, 20, dtype=torch.long))
    with pytest.raises(VqtkError, match=r"expected \(B, h, w, 3\)"):
        TokenLayout.with_depth(3).split(torch.zeros(2, 4, 4, 2, dtype=torch.long))
    with pytest.raises(VqtkError, match=r"expected \(B, h, w\)"):
        TokenLayout.grid().check_indices(torch.zeros(2, 16, dtype=torch.long))
    with pytest.raises(VqtkError, match=r"2 index grids do not make 3 scales"):
        MULTI.join([torch.zeros(2, 1, 1), torch.zeros(2, 2, 2)])
    with pytest.raises(VqtkError, match=r"sizes \[\(1, 1\), \(2, 2\), \(3, 3\)\]"):
        MULTI.join([torch.zeros(2, 1, 1), torch.zeros(2, 2, 2), torch.zeros(2, 3, 3)])
    with pytest.raises(VqtkError, match=r"latent grid \(8, 8\) is not the last of 3 scales"):
        MULTI.tokens((8, 8))


def test_mismatch_message_names_both_components():
    with pytest.raises(VqtkError) as err:
        check_layout_supported(TokenLayout.with_depth(4), ("grid",), "'gpt'", "'residual'")
    text = str(err.value)
    assert text.startswith("prior: 'gpt' models the grid layout, but model.quantizer 'residual' lays out its codes "
                           "as a grid with 4 indices per position")
    assert "`vqtk plugins`" in text
    check_layout_supported(MULTI, ("grid", "scales"), "'x'", "'msvq'")  # supported: no error


def test_metadata_round_trip():
    for layout in (TokenLayout.grid(), TokenLayout.with_depth(4), MULTI):
        meta = layout_metadata(layout)
        assert json.loads(meta["layout"])["kind"] == layout.kind
        assert read_layout(meta) == layout
    assert read_layout({}) is None


# -- a multi-scale quantizer through the core ----------------------------------------------


class ToyScales(Quantizer):
    """VAR-like residual quantization over scales 1, 2, 4 of a 4x4 latent (test-only), one shared codebook."""

    def __init__(self, *, dim: int = 4, codebook_size: int = 8):
        super().__init__()
        self.dim, self.codebook_size = dim, codebook_size
        self.codes = nn.Parameter(torch.randn(codebook_size, dim))

    @property
    def layout(self) -> TokenLayout:
        return MULTI

    def quantize(self, z):
        rest, total, parts = z, torch.zeros_like(z), []
        for h, w in SCALES:
            small = F.interpolate(rest, size=(h, w), mode="area").permute(0, 2, 3, 1)
            idx = torch.cdist(small.reshape(-1, self.dim), self.codes).argmin(1).view(z.shape[0], h, w)
            up = self._up(idx, z.shape[-2:])
            total, rest = total + up, rest - up
            parts.append(idx)
        loss = (total - z.detach()).pow(2).mean()
        return QuantizerOutput(quantized=z + (total - z).detach(), indices=MULTI.join(parts), loss=loss)

    def _up(self, idx, size):
        return F.interpolate(self.codes[idx].permute(0, 3, 1, 2), size=tuple(size), mode="bicubic")

    def lookup(self, indices):
        return sum(self._up(part, SCALES[-1]) for part in MULTI.split(indices))


def _tokenizer() -> VQGAN:
    torch.manual_seed(0)
    return VQGAN(encoder=ToyEncoder(), quantizer=ToyScales(), decoder=ToyDecoder())


def test_multiscale_quantizer_meets_the_contract_and_the_probe():
    out = check_quantizer(ToyScales())  # grid defaults to the last scale
    assert out.indices.shape == (2, 21)
    shapes = probe_shapes(_tokenizer(), None, 16)
    assert shapes["indices"] == (1, 21)
    with pytest.raises(VqtkError, match=r"latent grid \(8, 8\) is not the last of 3 scales"):
        probe_shapes(_tokenizer(), None, 32)


def test_code_statistics_accept_every_layout():
    flat = torch.tensor([[0, 1, 1, 2], [3, 3, 3, 3]])  # (B, L) with one codebook
    counts = code_histogram(flat, 4, 1)
    assert counts.tolist() == [[1, 2, 1, 4]]
    assert code_ids(flat, 4, 1).shape == (8,)
    with pytest.raises(ValueError, match=r"expected indices \(B, h, w, 2\)"):
        code_histogram(flat, 4, 2)
    health = CodebookHealth(codebook_size=4, window=1)
    health.observe(flat, step=0)
    assert health.alive().tolist() == [[True, True, True, True]]


class _Images(torch.utils.data.Dataset):
    def __len__(self):
        return 5

    def __getitem__(self, i):
        return torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(int(i)))


def test_code_cache_and_eval_usage_for_a_multiscale_tokenizer(tmp_path):
    model = _tokenizer().eval()
    cpu = torch.device("cpu")
    codes, labels = encode_dataset(model, _Images(), batch_size=2, passes=1, seed=0, device=cpu, show_progress=False)
    assert codes.shape == (5, 21) and labels is None
    for _ in range(2):  # written, then reused
        again, _ = load_or_encode(model, _Images(), cache_dir=tmp_path, key="k", batch_size=2, passes=1, seed=0,
                                  device=cpu)
        assert torch.equal(again, codes)
    # a cache whose shape is not the layout's is encoded again, never trusted
    from safetensors.torch import save_file
    save_file({"codes": torch.zeros(5, 4, 4, dtype=torch.long)}, str(tmp_path / "k.safetensors"))
    again, _ = load_or_encode(model, _Images(), cache_dir=tmp_path, key="k", batch_size=2, passes=1, seed=0,
                              device=cpu)
    assert torch.equal(again, codes)
    result = evaluate(model, _Images(), batch_size=2)
    assert result.counts.shape == (1, 8) and int(result.counts.sum()) == 5 * 21


class _LyingQuantizer(ToyScales):
    @property
    def layout(self) -> TokenLayout:
        return TokenLayout.with_depth(2)


def test_encoding_refuses_indices_outside_the_declared_layout():
    torch.manual_seed(0)
    model = VQGAN(encoder=ToyEncoder(), quantizer=_LyingQuantizer(), decoder=ToyDecoder()).eval()
    with pytest.raises(VqtkError, match=r"^model.quantizer: encode_to_indices returned shape \(2, 21\) for a grid "
                                        r"with 2 indices per position, expected \(2, 4, 4, 2\)"):
        encode_dataset(model, _Images(), batch_size=2, passes=1, seed=0, device=torch.device("cpu"),
                       show_progress=False)


class _StubPrior(Prior):
    layouts = ("grid", "scales")

    def __init__(self, *, scales=(), codebook_size=8, grid_size=(4, 4)):
        super().__init__()
        self.scales, self.codebook_size, self.grid_size = scales, codebook_size, grid_size

    def loss(self, indices, labels=None):
        return PriorOutput(loss=torch.zeros(()))

    def sample(self, batch_size, **_):
        return torch.zeros(self.layout.index_shape(batch_size, self.grid_size), dtype=torch.long)


def test_prior_fits_checks_the_layout_the_prior_was_built_for():
    model = _tokenizer()
    assert _StubPrior(scales=SCALES).layout == MULTI and _StubPrior().layout == TokenLayout.grid()
    check_prior_fits(_StubPrior(scales=SCALES), model, (4, 4), "toy")
    with pytest.raises(VqtkError, match=r"^prior: 'stub' was built for a grid with one index per position, but "
                                        r"model.quantizer 'toy' lays out its codes as 3 scales \(1, 2, 4\)$"):
        check_prior_fits(_StubPrior(), model, (4, 4), "toy", prior_type="stub")
    with pytest.raises(VqtkError, match=r"^prior_train.large_grid: model.quantizer 'toy' codes 3 scales"):
        check_prior_fits(_StubPrior(scales=SCALES), model, (4, 4), "toy", large_grid=(8, 8))


def test_check_names_the_quantizer_when_the_image_size_misses_the_last_scale(capsys):
    recipe = Path(__file__).resolve().parents[2] / "recipes" / "variants" / "msvq.toml"
    assert main(["check", str(recipe), "model.quantizer.scales=[1, 2, 4]"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "vqtk: error: model.quantizer: the latent grid (8, 8) is not the last of 3 scales (1, 2, 4): a multi-scale "
        "tokenizer only codes images whose latent grid is (4, 4)")
