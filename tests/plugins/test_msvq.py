"""The ``msvq`` quantizer (VAR's multi-scale residual VQ): layout, shapes, gradients, lookup, usage, restarts.

Agreement with VAR's own computation (indices per scale, f_hat) is checked against an
independent implementation in tests/interop/test_var_convert.py.
"""

from __future__ import annotations

import pytest
import torch

from vqtk import testing
from vqtk.errors import VqtkError
from vqtk.interfaces import RestartableQuantizer, TokenLayout
from vqtk.train.codebook_health import CodebookHealth
from vqtk_builtins.quantizers.msvq import VAR_SCALES, MultiScaleQuantizer, check_msvq
from vqtk_builtins.quantizers.msvq_phi import Phi, phi_count, phi_for_scales

SCALES = (1, 2, 3, 4)
TOKENS = 1 + 4 + 9 + 16


def _q(**options) -> MultiScaleQuantizer:
    torch.manual_seed(0)
    return MultiScaleQuantizer(**{"dim": 8, "codebook_size": 32, "scales": SCALES, **options})


def _z(b=2, side=4, seed=0, requires_grad=False):
    return torch.randn(b, 8, side, side, generator=torch.Generator().manual_seed(seed), requires_grad=requires_grad)


def test_layout_and_shapes():
    q = _q()
    assert q.layout == TokenLayout.multiscale(SCALES) and q.layout.tokens((4, 4)) == TOKENS
    out = q(_z())
    assert out.quantized.shape == (2, 8, 4, 4) and out.indices.shape == (2, TOKENS)
    assert out.indices.dtype == torch.int64 and out.loss.dim() == 0
    parts = q.layout.split(out.indices)
    assert [tuple(p.shape) for p in parts] == [(2, s, s) for s in SCALES]


def test_the_registered_component_passes_the_contract(builtins_registry):
    testing.check_component(builtins_registry, "quantizer", "msvq", {"dim": 8, "codebook_size": 16, "scales": [1, 2, 4]})


def test_gradients_straight_through_to_the_encoder_and_the_loss_trains_codes_and_phi():
    q = _q()
    z = _z(requires_grad=True)
    out = q(z)
    out.quantized.sum().backward(retain_graph=True)
    assert torch.equal(z.grad, torch.ones_like(z))  # straight-through: the identity
    z.grad = None
    out.loss.backward()
    assert z.grad.abs().sum() > 0  # the commitment term
    assert q.embedding.weight.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in q.phi.parameters())


def test_lookup_of_the_indices_is_the_quantized_latent_exactly_in_eval():
    q = _q().eval()
    with torch.no_grad():
        out = q(_z())
    assert torch.equal(q.lookup(out.indices), out.quantized)


def test_usage_is_logged_per_scale():
    q = _q(codebook_size=1024)
    out = q(_z(b=2))
    for s in SCALES:
        u = float(out.metrics[f"usage/scale_{s}x{s}"])
        n_codes = len(q.layout.split(out.indices)[SCALES.index(s)].unique())
        assert u == pytest.approx(n_codes / 1024)
    assert float(out.metrics["usage/scale_1x1"]) <= 2 / 1024  # two images: at most two codes at 1x1
    assert {"commitment", "codebook_loss", "perplexity", "usage"} <= set(out.metrics)


def test_a_latent_grid_other_than_the_last_scale_is_an_error_naming_both():
    with pytest.raises(VqtkError, match=r"latent grid \(8, 8\) is not the last of 4 scales"):
        _q()(_z(side=8))


def test_phi_sharing_follows_var():
    # VAR's default: 4 phi convs over 10 scales; scales 2 and 7 sit on ties, resolved as VAR's float64 ticks do
    assert phi_for_scales(4, len(VAR_SCALES)) == (0, 0, 1, 1, 1, 2, 2, 3, 3, 3)
    assert phi_count(4, 10) == 4 and phi_count(1, 10) == 1 and phi_count(0, 10) == 10 and phi_count(0, 10, 3) == 3
    assert phi_for_scales(10, 10) == tuple(range(10)) and phi_for_scales(1, 5) == (0,) * 5
    q = _q(share_quant_resi=0)
    assert len(q.phi) == 4 and all(isinstance(p, Phi) and p.ratio == 0.5 for p in q.phi)
    assert not list(_q(quant_resi=0.0).phi.parameters())  # ratio 0: identities, as VAR's nn.Identity


def test_znorm_picks_codes_by_direction():
    q = _q(use_znorm=True, scales=(1,), codebook_size=2, quant_resi=0.0)
    q.embedding.weight.data = torch.tensor([[1.0] + [0.0] * 7, [-10.0] + [0.0] * 7])
    z = torch.zeros(1, 8, 1, 1)
    z[0, 0] = -0.1  # nearer to code 0 by distance, but pointing the way of code 1
    assert int(q(z).indices) == 1
    assert int(_q(scales=(1,), codebook_size=2, quant_resi=0.0, init_std=1.0).eval()(z).indices) in (0, 1)


def test_recipe_check_refuses_scales_that_do_not_increase():
    class Config:
        scales = (1, 4, 2)

    with pytest.raises(ValueError, match="strictly increase"):
        check_msvq(Config())


def test_a_collapsed_codebook_recovers_through_dead_code_restarts():
    """Every code but one far away: one code is used at every scale until the trainer's tracker restarts the rest."""
    q = _q(codebook_size=64)
    assert isinstance(q, RestartableQuantizer) and q.supports_restarts()
    q.embedding.weight.data.fill_(100.0)
    q.embedding.weight.data[0] = 0.0
    health = CodebookHealth(codebook_size=64, window=2, restart_dead_codes=True, reservoir_size=256)
    health.attach(q, step=lambda: step)
    q.train()
    for step in range(2):
        out = q(_z(b=8, seed=step))
    assert len(out.indices.unique()) == 1
    record = health.check(step=1)
    assert record["codebook/dead_codes"] == 63 and record["codebook/restarted_codes"] == 63
    out = q(_z(b=8, seed=5))
    assert len(out.indices.unique()) > 16
    assert float(out.metrics["usage/scale_4x4"]) > 0.25
