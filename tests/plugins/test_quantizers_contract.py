"""The contract every built-in quantizer keeps (record, layout, gradients, lookup, state), and codebook usage on a toy problem."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from quantizer_cases import CASES, build, create, latents
from torch import nn

from vqtk.errors import VqtkError

pytestmark = pytest.mark.usefixtures("one_thread")


# -- the contract, for every quantizer ------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_record_shapes_dtypes_and_metrics(case):
    q = build(case)
    z = latents(q)
    out = q(z)
    assert out.quantized.shape == z.shape and out.quantized.dtype == torch.float32
    assert out.indices.dtype == torch.int64
    assert tuple(out.indices.shape) == (2, 4, 3, *q.index_shape_suffix)
    assert int(out.indices.min()) >= 0 and int(out.indices.max()) < q.codebook_size
    assert out.loss.dim() == 0 and out.loss.dtype == torch.float32 and torch.isfinite(out.loss)
    for key, value in out.metrics.items():
        assert isinstance(value, torch.Tensor) and value.dim() == 0, key
        assert not value.requires_grad, key
    per_codebook = out.indices.reshape(-1, q.num_codebooks)
    used = [torch.unique(per_codebook[:, i]).numel() for i in range(q.num_codebooks)]
    assert out.metrics["usage"].item() == pytest.approx(sum(used) / len(used) / q.codebook_size)
    # perplexity of each codebook lies in [1, codes used]; the record holds their mean
    assert 1.0 <= out.metrics["perplexity"].item() <= max(used) + 1e-4


@pytest.mark.parametrize("case", CASES)
def test_quantized_keeps_the_input_memory_layout(case):
    """Plain latents give plain codes and channels_last give channels_last, in forward and lookup;
    a channels_last view leaking out made the decoder's backward several times slower."""
    q = build(case)
    z = latents(q)
    plain = q(z)
    assert plain.quantized.is_contiguous()
    assert q.lookup(plain.indices).is_contiguous()
    cl = q(z.contiguous(memory_format=torch.channels_last)).quantized
    assert cl.is_contiguous(memory_format=torch.channels_last) and not cl.is_contiguous()


def test_forward_puts_a_plugins_quantized_view_in_the_input_layout():
    """A third-party quantizer returning a permuted token view still hands back the input's layout."""
    from vqtk.interfaces import Quantizer, QuantizerOutput

    class TokenView(Quantizer):
        dim, codebook_size = 4, 2

        def quantize(self, z):
            b, d, h, w = z.shape
            tokens = z.permute(0, 2, 3, 1).reshape(b, h * w, d).contiguous()  # as the libraries return them
            view = tokens.reshape(b, h, w, d).permute(0, 3, 1, 2)  # channels_last in memory
            return QuantizerOutput(quantized=view, indices=torch.zeros(b, h, w, dtype=torch.long),
                                   loss=z.new_zeros(()))

        def lookup(self, indices):
            raise NotImplementedError

    z = torch.randn(2, 4, 3, 5)
    plain = TokenView()(z).quantized
    assert plain.is_contiguous() and torch.equal(plain, z)
    cl = TokenView()(z.contiguous(memory_format=torch.channels_last)).quantized
    assert cl.is_contiguous(memory_format=torch.channels_last) and not cl.is_contiguous()


@pytest.mark.parametrize("case", CASES)
def test_gradients_reach_the_input(case):
    q = build(case)
    z = latents(q).requires_grad_()
    out = q(z)
    (out.quantized * torch.randn_like(out.quantized)).sum().backward()
    assert z.grad is not None and torch.isfinite(z.grad).all()
    assert z.grad.abs().sum() > 0


@pytest.mark.parametrize("case", CASES)
def test_lookup_inverts_indices_in_eval_mode(case):
    q = build(case)
    q(latents(q, seed=5))  # one training step first (k-means init, EMA, dead codes)
    q.eval()
    for batch in (1, 3):
        with torch.no_grad():
            out = q(latents(q, batch=batch, seed=6))
            again = q.lookup(out.indices)
        assert again.shape == out.quantized.shape
        torch.testing.assert_close(again, out.quantized, atol=1e-5, rtol=1e-5)
        assert torch.equal(q(latents(q, batch=batch, seed=6)).indices, out.indices)  # deterministic


@pytest.mark.parametrize("case", CASES)
def test_state_dict_round_trip_gives_identical_outputs(case):
    q = build(case, seed=0)
    opt = torch.optim.SGD(q.parameters(), lr=0.1) if list(q.parameters()) else None
    for step in range(2):  # changes buffers (EMA, k-means, dead codes) and parameters
        out = q(latents(q, seed=10 + step))
        if opt is not None and out.loss.requires_grad:
            opt.zero_grad()
            (out.loss + out.quantized.square().mean()).backward()
            opt.step()
    state = {k: v.clone() for k, v in q.state_dict().items()}
    fresh = build(case, seed=123)
    fresh.load_state_dict(state)
    q.eval()
    fresh.eval()
    z = latents(q, seed=99)
    with torch.no_grad():
        a, b = q(z), fresh(z)
    assert torch.equal(a.indices, b.indices)
    assert torch.equal(a.quantized, b.quantized)
    assert torch.equal(q.lookup(a.indices), fresh.lookup(a.indices))


@pytest.mark.parametrize("case", CASES)
def test_input_with_wrong_channels_is_refused(case):
    q = build(case)
    want = rf"expected latents \(batch, {q.dim}, h, w\), got shape \(2, {q.dim + 1}, 4, 4\)"
    with pytest.raises(VqtkError, match=want):
        q(torch.randn(2, q.dim + 1, 4, 4))
    bad = torch.zeros(2, 4, 4, 7, dtype=torch.long)
    with pytest.raises(VqtkError, match="expected indices"):
        q.lookup(bad if q.num_codebooks == 1 else bad[..., 0])


def test_forward_under_autocast_runs_in_float32():
    q = build("fsq")
    z = latents(q).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = q(z)
    assert out.quantized.dtype == torch.float32


# -- codebook usage on a toy problem (LESSONS.md: collapse is a bug) ----------------------------


@pytest.mark.parametrize(
    "name,options",
    [
        ("ema_vq", dict(dim=16, codebook_size=64, decay=0.8)),
        ("factorized", dict(dim=16, codebook_size=64, codebook_dim=8)),
        ("fsq", dict(levels=(4, 4, 4), dim=16)),
        ("lfq", dict(dim=16, codebook_size=64)),
        ("simvq", dict(dim=16, codebook_size=64)),
        ("residual", dict(dim=16, codebook_size=64, num_quantizers=2, decay=0.8)),
        ("gumbel", dict(dim=16, codebook_size=64, kl_weight=0.1)),
        ("ibq", dict(dim=16, codebook_size=64)),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_codebook_usage_stays_high_while_training(name, options):
    torch.manual_seed(0)
    x = torch.randn(4, 16, 8, 8)  # 256 fixed vectors of dim 16
    q = create(name, **options)
    enc, dec = nn.Conv2d(16, 16, 1), nn.Conv2d(16, 16, 1)
    opt = torch.optim.Adam([*q.parameters(), *enc.parameters(), *dec.parameters()], lr=1e-2)
    for _ in range(25):
        out = q(enc(x))
        loss = F.mse_loss(dec(out.quantized), x) + out.loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    q.eval()
    with torch.no_grad():
        out = q(enc(x))
    assert out.metrics["usage"].item() > 0.3, out.metrics
