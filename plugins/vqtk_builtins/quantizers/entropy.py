"""The entropy penalty of LlamaGen and IBQ on soft code assignments (MAGVIT's form).

With ``p_n = softmax(inv_temperature * affinity_n)`` the soft assignment of
latent ``n`` to the codes, the penalty is

    sample_weight * mean_n H(p_n) - codebook_weight * H(mean_n p_n)

low per-sample entropy (each latent confident about its code) and high
codebook entropy (the batch spreads over the codebook). Followed:
LlamaGen's ``compute_entropy_loss`` (FoundationVision/LlamaGen,
``tokenizer/tokenizer_image/vq_model.py``; affinity ``-||z - e||^2``, temperature
0.01, both weights 1) and IBQ's ``compute_entropy_loss`` (TencentARC/SEED-Voken,
``src/IBQ/modules/vqvae/quantize.py``; affinity ``z . e``, with
``sample_minimization_weight`` / ``batch_maximization_weight``), both after
MAGVIT's ``videogvt/train_lib/losses.py``. Their ``temperature`` divides the
affinities; ``inv_temperature`` here multiplies them (0.01 there is 100 here).
The codebook entropy takes ``log(p + 1e-5)`` as theirs does.
"""

from __future__ import annotations

import torch

#: the smoothing inside the codebook entropy's log (LlamaGen's and IBQ's 1e-5)
EPS = 1e-5


def entropy_penalty(
    affinity: torch.Tensor,
    inv_temperature: float,
    sample_weight: float = 1.0,
    codebook_weight: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(penalty, per-sample entropy, codebook entropy)`` of ``affinity`` ``(..., codebook_size)``.

    Entropies are in nats; every leading dimension of ``affinity`` counts as a sample.
    """
    logits = affinity.reshape(-1, affinity.shape[-1]) * inv_temperature
    probs = logits.softmax(dim=-1)
    sample_entropy = -(probs * logits.log_softmax(dim=-1)).sum(dim=-1).mean()
    mean_probs = probs.mean(dim=0)
    codebook_entropy = -(mean_probs * torch.log(mean_probs + EPS)).sum()
    return sample_weight * sample_entropy - codebook_weight * codebook_entropy, sample_entropy, codebook_entropy
