"""The assembled VQGAN: encoder, pre-quant conv, quantizer, post-quant conv, decoder (1x1 convs unless told)."""

from __future__ import annotations

import attrs
import torch
from torch import nn

from vqtk.interfaces import Decoder, Encoder, Quantizer, QuantizerOutput


@attrs.define(eq=False)
class VQGANOutput:
    """A forward pass: the reconstruction and the quantizer's record."""

    reconstruction: torch.Tensor
    quantizer: QuantizerOutput


class VQGAN(nn.Module):
    """An image tokenizer built from any registered encoder, quantizer and decoder.

    Two convolutions map ``encoder.out_channels -> quantizer.dim`` and
    ``quantizer.dim -> decoder.in_channels`` (taming's ``quant_conv`` and
    ``post_quant_conv``): 1x1 by default, as in taming and LlamaGen;
    ``quant_conv_kernel = 3`` makes them 3x3 with zero padding, as in VAR's VQVAE
    (``quant_conv_ks``).
    """

    def __init__(self, *, encoder: Encoder, quantizer: Quantizer, decoder: Decoder, quant_conv_kernel: int = 1):
        super().__init__()
        if quant_conv_kernel < 1 or quant_conv_kernel % 2 == 0:
            raise ValueError(f"quant_conv_kernel must be a positive odd number, got {quant_conv_kernel}")
        pad = quant_conv_kernel // 2
        self.encoder = encoder
        self.quant_conv = nn.Conv2d(encoder.out_channels, quantizer.dim, quant_conv_kernel, padding=pad)
        self.quantizer = quantizer
        self.post_quant_conv = nn.Conv2d(quantizer.dim, decoder.in_channels, quant_conv_kernel, padding=pad)
        self.decoder = decoder

    @property
    def downsample_factor(self) -> int:
        return self.encoder.downsample_factor

    def latent_grid(self, height: int, width: int) -> tuple[int, int]:
        """The code grid ``(h, w)`` for images of ``height x width`` pixels."""
        f = self.downsample_factor
        return height // f, width // f

    def encode(self, x: torch.Tensor) -> QuantizerOutput:
        """Images ``(B, C, H, W)`` in ``[-1, 1]`` to the quantizer's record."""
        return self.quantizer(self.quant_conv(self.encoder(x)))

    def decode(self, quantized: torch.Tensor) -> torch.Tensor:
        """Quantized latents ``(B, dim, h, w)`` to images."""
        return self.decoder(self.post_quant_conv(quantized))

    def forward(self, x: torch.Tensor) -> VQGANOutput:
        q = self.encode(x)
        return VQGANOutput(reconstruction=self.decode(q.quantized), quantizer=q)

    @torch.no_grad()
    def encode_to_indices(self, x: torch.Tensor) -> torch.Tensor:
        """Images to code indices in the quantizer's layout: ``(B, h, w)``, ``(B, h, w, Q)`` or ``(B, L)``."""
        return self.encode(x).indices

    @torch.no_grad()
    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """Code indices back to images in ``[-1, 1]`` (not clamped)."""
        return self.decode(self.quantizer.lookup(indices))
