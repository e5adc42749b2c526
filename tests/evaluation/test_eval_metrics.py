"""SSIM, the set's codebook summary and Fréchet distances against hand computations and reference libraries.

PSNR and code histograms are tested with :mod:`vqtk.measure` (tests/core/test_measure.py).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vqtk.evaluation.fid import FeatureStatistics, frechet_distance
from vqtk.evaluation.metrics import codebook_statistics, gaussian_window, ssim_per_image
from vqtk.measure import code_histogram


def test_gaussian_window_is_normalised_11_taps_sigma_1_5():
    g = gaussian_window()
    assert g.shape == (11,) and float(g.sum()) == pytest.approx(1.0)
    assert torch.allclose(g, g.flip(0))
    # ratio of neighbouring taps of exp(-x^2 / (2 * 1.5^2))
    assert float(g[5] / g[6]) == pytest.approx(math.exp(1 / (2 * 1.5**2)))


def test_ssim_matches_skimage_gaussian_ssim():
    from skimage.metrics import structural_similarity

    gen = torch.Generator().manual_seed(0)
    real = torch.rand(3, 3, 24, 20, generator=gen)
    noise = torch.rand(3, 3, 24, 20, generator=gen)
    fake = (real * torch.tensor([0.9, 0.6, 0.2]).view(3, 1, 1, 1)
            + noise * torch.tensor([0.1, 0.4, 0.8]).view(3, 1, 1, 1))
    ours = ssim_per_image(real, fake)
    for i in range(3):
        ref = structural_similarity(
            real[i].permute(1, 2, 0).double().numpy(), fake[i].permute(1, 2, 0).double().numpy(),
            gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0, channel_axis=-1,
        )
        assert float(ours[i]) == pytest.approx(ref, abs=1e-6)
    assert ours[0] > ours[1] > ours[2]  # more noise, lower SSIM
    assert ssim_per_image(real, real).tolist() == pytest.approx([1.0, 1.0, 1.0], abs=1e-6)


def test_ssim_refuses_images_smaller_than_the_window():
    x = torch.rand(1, 3, 10, 16)
    with pytest.raises(ValueError, match="at least 11x11 pixels, got 10x16"):
        ssim_per_image(x, x)


def _constructed_indices() -> torch.Tensor:
    # 8 positions of codebook 0: code 0 four times, code 1 twice, codes 2 and 3 once
    return torch.tensor([0, 0, 0, 0, 1, 1, 2, 3]).view(2, 2, 2)


def test_usage_entropy_and_perplexity_of_a_constructed_distribution():
    counts = code_histogram(_constructed_indices(), codebook_size=8)
    assert counts.tolist() == [[4, 2, 1, 1, 0, 0, 0, 0]]
    stats = codebook_statistics(counts)
    # p = 1/2, 1/4, 1/8, 1/8: H = 1/2*1 + 1/4*2 + 2 * 1/8*3 = 1.75 bits
    assert stats["entropy_bits"] == pytest.approx([1.75])
    assert stats["perplexity"] == pytest.approx([2**1.75])
    assert stats["usage"] == [0.5] and stats["used_codes"] == [4] and stats["positions"] == 8
    assert stats["usage_mean"] == 0.5 and stats["entropy_bits_mean"] == pytest.approx(1.75)


def test_per_codebook_statistics_for_multi_codebook_indices():
    first = _constructed_indices()
    second = torch.full_like(first, 5)  # every position uses code 5
    indices = torch.stack([first, second], dim=-1)  # (B, h, w, Q=2)
    counts = code_histogram(indices, codebook_size=8, num_codebooks=2)
    assert counts.shape == (2, 8) and counts[1].tolist() == [0, 0, 0, 0, 0, 8, 0, 0]
    stats = codebook_statistics(counts)
    assert stats["usage"] == [0.5, 0.125] and stats["used_codes"] == [4, 1]
    assert stats["entropy_bits"] == pytest.approx([1.75, 0.0])
    assert stats["perplexity"] == pytest.approx([2**1.75, 1.0])
    assert stats["usage_mean"] == pytest.approx(0.3125)
    assert stats["perplexity_mean"] == pytest.approx((2**1.75 + 1) / 2)
    # histograms of batches add up to the histogram of the set
    again = code_histogram(indices[:1], codebook_size=8, num_codebooks=2) + code_histogram(
        indices[1:], codebook_size=8, num_codebooks=2)
    assert torch.equal(again, counts)


def test_feature_statistics_match_numpy_mean_and_covariance():
    gen = torch.Generator().manual_seed(1)
    feats = torch.randn(30, 5, generator=gen, dtype=torch.float64)
    stats = FeatureStatistics(5)
    for chunk in feats.split(7):
        stats.add(chunk.float())
    mu, cov = stats.mean_cov()
    f32 = feats.float().double().numpy()
    np.testing.assert_allclose(mu.numpy(), f32.mean(0), atol=1e-10)
    np.testing.assert_allclose(cov.numpy(), np.cov(f32, rowvar=False), atol=1e-10)
    with pytest.raises(ValueError, match="at least 2"):
        FeatureStatistics(5).mean_cov()


def test_frechet_distance_matches_scipy_hand_computation():
    from scipy import linalg

    rng = np.random.default_rng(0)
    a = rng.normal(size=(50, 8))
    b = rng.normal(loc=0.3, scale=1.5, size=(60, 8)) @ rng.normal(size=(8, 8)) * 0.5
    mu1, s1 = a.mean(0), np.cov(a, rowvar=False)
    mu2, s2 = b.mean(0), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2)
    covmean = covmean.real if np.iscomplexobj(covmean) else covmean
    expected = ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)
    ours = frechet_distance(torch.from_numpy(mu1), torch.from_numpy(s1), torch.from_numpy(mu2), torch.from_numpy(s2))
    assert ours == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(torch.from_numpy(mu1), torch.from_numpy(s1),
                            torch.from_numpy(mu1), torch.from_numpy(s1)) == pytest.approx(0.0, abs=1e-9)


def test_frechet_distance_of_one_dimensional_gaussians():
    # N(0, 1) vs N(3, 4): 3^2 + 1 + 4 - 2 * sqrt(1 * 4) = 10
    d = frechet_distance(torch.tensor([0.0]), torch.tensor([[1.0]]), torch.tensor([3.0]), torch.tensor([[4.0]]))
    assert d == pytest.approx(10.0)
    with pytest.raises(ValueError, match="mismatched"):
        frechet_distance(torch.zeros(2), torch.eye(2), torch.zeros(3), torch.eye(3))


def test_frechet_distance_stays_real_for_rank_deficient_covariances():
    # fewer samples than dimensions, as with small evaluation sets
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(4, 16)), rng.normal(size=(4, 16)) + 1.0
    d = frechet_distance(*(torch.from_numpy(x) for x in (a.mean(0), np.cov(a, rowvar=False),
                                                         b.mean(0), np.cov(b, rowvar=False))))
    assert math.isfinite(d) and d > 16 * 0.5  # the mean shift alone contributes 16
