"""vqtk.measure: PSNR, code statistics and batch unpacking against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.data import DataLoader

from vqtk import measure
from vqtk.interfaces import codebook_stats


# -- PSNR ----------------------------------------------------------------------


def test_psnr_of_known_errors_on_the_unit_scale():
    real = torch.full((2, 3, 2, 2), -1.0)  # 0 on the [0, 1] scale
    # -0.8 and 0.0 are 0.1 and 0.5 on [0, 1]: MSE 0.01 -> 20 dB, MSE 0.25 -> 10 log10(4) dB
    fake = torch.stack([torch.full((3, 2, 2), -0.8), torch.full((3, 2, 2), 0.0)])
    per = measure.psnr_per_image(real, fake)
    assert per.shape == (2,) and per.tolist() == pytest.approx([20.0, 10 * math.log10(4)], abs=1e-5)
    assert float(measure.psnr(real, fake)) == pytest.approx((20.0 + 10 * math.log10(4)) / 2, abs=1e-5)
    assert float(measure.psnr_per_image(real, real)[0]) == pytest.approx(100.0)  # MSE floored: finite


def test_psnr_clamps_to_the_image_range_and_checks_shapes():
    real = torch.zeros(1, 3, 4, 4)
    over = torch.full((1, 3, 4, 4), 3.0)  # clamped to 1.0: 0.5 off on [0, 1], MSE 0.25
    assert float(measure.psnr(real, over)) == pytest.approx(10 * math.log10(4), abs=1e-5)
    with pytest.raises(ValueError, match="one shape"):
        measure.psnr_per_image(real, over[:, :2])
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        measure.psnr(real[0], over[0])


def test_to_unit_range_maps_model_space_to_unit_interval():
    x = torch.tensor([-1.5, -1.0, 0.0, 1.0, 2.0]).view(1, 1, 1, 5)
    assert measure.to_unit_range(x).flatten().tolist() == [0.0, 0.0, 0.5, 1.0, 1.0]


# -- codes ---------------------------------------------------------------------


def _one_codebook() -> torch.Tensor:
    """(2, 2, 2): code 0 four times, code 1 twice, codes 2 and 3 once."""
    return torch.tensor([0, 0, 0, 0, 1, 1, 2, 3]).view(2, 2, 2)


def test_histogram_usage_entropy_and_perplexity_of_one_codebook():
    counts = measure.code_histogram(_one_codebook(), 8)
    assert counts.dtype == torch.long and counts.tolist() == [[4, 2, 1, 1, 0, 0, 0, 0]]
    assert measure.used_codes(counts).tolist() == [4]
    assert measure.code_usage(counts).tolist() == [0.5]
    # p = 1/2, 1/4, 1/8, 1/8: H = 1/2*1 + 1/4*2 + 2 * 1/8*3 = 1.75 bits
    assert measure.entropy_bits(counts).tolist() == pytest.approx([1.75])
    assert measure.perplexity(counts).tolist() == pytest.approx([2**1.75])
    assert measure.entropy_bits(torch.tensor([[5, 5, 0, 0]])).tolist() == pytest.approx([1.0])
    assert measure.entropy_bits(torch.tensor([[3, 0, 0, 0]])).tolist() == [0.0]
    assert measure.perplexity(torch.tensor([[0, 0]])).tolist() == [1.0]  # nothing seen: one "code"
    assert measure.entropy_bits(counts, dtype=torch.float32).dtype == torch.float32


def test_residual_indices_are_counted_per_codebook():
    first = _one_codebook()
    indices = torch.stack([first, torch.full_like(first, 5), first.flip(0)], dim=-1)  # (B, h, w, Q=3)
    counts = measure.code_histogram(indices, 8)  # Q from the trailing dimension
    assert counts.shape == (3, 8)
    assert counts[0].tolist() == [4, 2, 1, 1, 0, 0, 0, 0] and counts[1].tolist() == [0, 0, 0, 0, 0, 8, 0, 0]
    assert torch.equal(counts, measure.code_histogram(indices, 8, 3))
    assert measure.code_usage(counts).tolist() == [0.5, 0.125, 0.5]
    assert measure.entropy_bits(counts).tolist() == pytest.approx([1.75, 0.0, 1.75])
    assert measure.perplexity(counts).tolist() == pytest.approx([2**1.75, 1.0, 2**1.75])
    # histograms of batches add up to the histogram of the set
    assert torch.equal(measure.code_histogram(indices[:1], 8) + measure.code_histogram(indices[1:], 8), counts)
    # flat ids: codebook q's code c is q * K + c
    assert measure.code_ids(indices[:1, :1, :1], 8).tolist() == [0, 13, 16 + 1]


def test_histogram_checks_shapes_and_optionally_the_range():
    with pytest.raises(ValueError, match=r"expected indices \(B, h, w, 3\)"):
        measure.code_histogram(torch.zeros(1, 2, 2, 2, dtype=torch.long), 4, 3)
    with pytest.raises(ValueError, match=r"expected indices \(B, h, w\)"):
        measure.code_ids(torch.zeros(4, dtype=torch.long), 4, 1)
    with pytest.raises(ValueError, match=r"out of range for a codebook of 3 codes \(min 0, max 3\)"):
        measure.code_histogram(_one_codebook(), 3, check_range=True)


def test_codebook_stats_of_the_interfaces_uses_the_same_numbers():
    first = _one_codebook()
    indices = torch.stack([first, torch.full_like(first, 5)], dim=-1)
    stats = codebook_stats(indices, 8)
    assert stats["usage"].dtype == torch.float32 and float(stats["usage"]) == pytest.approx((0.5 + 0.125) / 2)
    assert float(stats["perplexity"]) == pytest.approx((2**1.75 + 1) / 2, rel=1e-6)
    # natural-log perplexity of the old implementation: exp(H_nats) == 2 ** H_bits
    p = torch.tensor([4, 2, 1, 1]) / 8
    assert float(codebook_stats(first, 8)["perplexity"]) == pytest.approx(float(torch.exp(-(p * p.log()).sum())))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (host-sync check)")
def test_code_statistics_never_synchronise_on_cuda():
    idx = torch.randint(0, 512, (4, 8, 8, 2), device="cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        counts = measure.code_histogram(idx, 512)
        measure.perplexity(counts, dtype=torch.float32)
        measure.code_usage(counts)
        codebook_stats(idx, 512)
        measure.code_ids(idx, 512, 2)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert int(counts.sum()) == idx.numel()


# -- batches -------------------------------------------------------------------


def test_split_batch_takes_tensors_tuples_and_lists():
    image = torch.zeros(3, 4, 4)
    assert measure.split_batch(image)[0] is image and measure.split_batch(image)[1] is None
    assert measure.split_batch((image, 7)) == (image, 7)
    assert measure.split_batch([image, 7]) == (image, 7)
    assert measure.split_batch((image,)) == (image, None)
    # what a DataLoader collates from each kind of item
    for items in ([image, image], [(image, 1), (image, 2)], [[image, 1], [image, 2]]):
        batch = next(iter(DataLoader(items, batch_size=2)))
        images, labels = measure.split_batch(batch)
        assert images.shape == (2, 3, 4, 4)
        assert labels is None if items[0] is image else labels.tolist() == [1, 2]


def test_split_batch_refuses_anything_else():
    for bad in ({"image": torch.zeros(1)}, (1, 2), (torch.zeros(1), 1, 2), [], "x"):
        with pytest.raises(TypeError, match="image tensor or an"):
            measure.split_batch(bad)
