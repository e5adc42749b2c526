"""Index Backpropagation Quantization (IBQ): straight-through over the whole codebook's softmax."""

from __future__ import annotations

from typing import Annotated, Optional

import torch
import torch.nn.functional as F
from torch import nn

from vqtk.config import non_negative, positive
from vqtk.interfaces import Quantizer, QuantizerOutput
from vqtk_builtins.quantizers.entropy import entropy_penalty
from vqtk_builtins.quantizers.layout import (
    from_tokens,
    indices_to_grid,
    indices_to_tokens,
    to_tokens,
)
from vqtk_builtins.quantizers.vq import CodeSpace


class IndexBackpropQuantizer(CodeSpace, Quantizer):
    """IBQ: the straight-through estimator over the full codebook softmax, so every code learns every step.

    IBQ (Shi et al. 2024, "Taming Scalable Visual Tokenizer for Autoregressive
    Image Generation", arXiv 2412.02692). With ``z`` the latent and ``E`` the
    codebook, ``logits = z @ E.T`` (inner products), ``soft = softmax(logits)``,
    ``hard = one_hot(argmax(logits))`` and the quantized latent is
    ``(hard - sg(soft) + soft) @ E``: forward the code of highest inner product,
    backward the gradient of ``soft @ E``, which reaches every code (and the
    encoder through the softmax), unlike nearest-code VQ, where only the chosen
    codes learn. The loss is that of IBQ's code,
    ``mse(q_st, z) + mse(z, sg(e)) + beta * mse(e, sg(z))`` with ``q_st`` the
    straight-through output above and ``e`` the chosen code: weight 1 on the
    commitment term and ``beta`` on the codebook term, as there. In training,
    ``entropy_loss_weight`` adds IBQ's entropy penalty on
    ``softmax(entropy_temperature * logits)``:
    ``sample_entropy_weight * mean per-latent entropy - codebook_entropy_weight * codebook entropy``.

    Followed: TencentARC/SEED-Voken, ``src/IBQ/modules/vqvae/quantize.py``
    (``IndexPropagationQuantize``, ``compute_entropy_loss``) and the defaults of
    its ``configs/IBQ/gpu/imagenet_ibqgan_16384.yaml``. Codes start N(0, 1)
    (their ``nn.Embedding``). ``codebook_dim`` and ``use_cosine_sim`` are vqtk's
    additions (their ``cosine_similarity`` flag is accepted and unused).

    Args:
        dim: channels of the latents.
        codebook_size: number of codes (IBQ's tokenizers use 1024 to 262144).
        beta: weight of the codebook term mse(e, sg(z)); the commitment term mse(z, sg(e))
            and the straight-through term mse(q_st, z) have weight 1 (IBQ's code).
        entropy_loss_weight: weight of the entropy penalty, in training (IBQ's configs: 0.05);
            0 disables it.
        entropy_temperature: inverse temperature of the soft assignment behind the entropy
            penalty: softmax(entropy_temperature * logits). IBQ's temperature 0.01 is 100.
        sample_entropy_weight: weight of the mean per-latent entropy (minimised); IBQ's
            sample_minimization_weight.
        codebook_entropy_weight: weight of the codebook (batch-averaged) entropy (maximised);
            IBQ's batch_maximization_weight.
        codebook_dim: code dimension; smaller than dim adds learned linear projections in and
            out (factorised codebook); absent = dim.
        use_cosine_sim: l2-normalise latents and codes, so the logits are cosine similarities
            (and the chosen code is also the nearest).
    """

    def __init__(
        self,
        *,
        dim: Annotated[int, positive] = 256,
        codebook_size: Annotated[int, positive] = 16384,
        beta: Annotated[float, non_negative] = 0.25,
        entropy_loss_weight: Annotated[float, non_negative] = 0.05,
        entropy_temperature: Annotated[float, positive] = 100.0,
        sample_entropy_weight: Annotated[float, non_negative] = 1.0,
        codebook_entropy_weight: Annotated[float, non_negative] = 1.0,
        codebook_dim: Annotated[Optional[int], positive] = None,
        use_cosine_sim: bool = False,
    ):
        super().__init__()
        self.init_code_space(dim, codebook_size, codebook_dim, use_cosine_sim)
        self.beta = beta
        self.entropy_loss_weight = entropy_loss_weight
        self.entropy_temperature = entropy_temperature
        self.sample_entropy_weight = sample_entropy_weight
        self.codebook_entropy_weight = codebook_entropy_weight
        self.embedding = nn.Embedding(codebook_size, self.codebook_dim)  # IBQ's name and N(0, 1) init

    def codes(self) -> torch.Tensor:
        """The codebook ``(codebook_size, codebook_dim)`` as quantization sees it (normalised if cosine)."""
        weight = self.embedding.weight
        return F.normalize(weight, dim=-1) if self.use_cosine_sim else weight

    def quantize(self, z: torch.Tensor) -> QuantizerOutput:
        """Quantize ``(B, dim, h, w)`` latents; see the class docstring for the estimator and the loss."""
        tokens, grid = to_tokens(z, self.dim, type(self).__name__)
        x = self.to_code_space(tokens)
        codes = self.codes()
        logits = x @ codes.T  # (B, h*w, codebook_size)
        idx = logits.argmax(dim=-1)
        chosen = codes[idx]
        if torch.is_grad_enabled():
            # (hard - sg(soft) + soft) @ E, written as E[idx] + (soft - sg(soft)) @ E: the same
            # gradients, and a forward value that is exactly the code (the second term is 0)
            soft = logits.softmax(dim=-1)
            q = chosen + (soft - soft.detach()) @ codes
        else:
            q = chosen
        st_term = F.mse_loss(q, x)
        commitment = F.mse_loss(x, chosen.detach())
        codebook_loss = F.mse_loss(chosen, x.detach())
        loss = st_term + commitment + self.beta * codebook_loss
        metrics = {
            "straight_through_term": st_term.detach(),
            "commitment": commitment.detach(),
            "codebook_loss": codebook_loss.detach(),
        }
        if self.entropy_loss_weight > 0 and self.training:
            penalty, sample_entropy, codebook_entropy = entropy_penalty(
                logits, self.entropy_temperature, self.sample_entropy_weight, self.codebook_entropy_weight
            )
            loss = loss + self.entropy_loss_weight * penalty
            metrics.update(entropy_loss=penalty.detach(), sample_entropy=sample_entropy.detach(),
                           codebook_entropy=codebook_entropy.detach())
        return QuantizerOutput(
            quantized=from_tokens(self.project_out(q), grid),
            indices=indices_to_grid(idx, grid),
            loss=loss,
            metrics=metrics,
        )

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Codes for ``(B, h, w)`` indices, as ``(B, dim, h, w)`` latents."""
        idx, grid = indices_to_tokens(indices, 1, type(self).__name__)
        return from_tokens(self.project_out(self.codes()[idx]), grid)
