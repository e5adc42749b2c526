"""A plain PyTorch VQGAN in taming-transformers' f16 architecture, and its training step.

Written for the benchmark as the reference every vqtk stage-1 figure is divided
by. It imports nothing from vqtk: only torch and torchvision (for the LPIPS
backbone). It follows taming's code where that decides the cost of a step:

- encoder / decoder: ``taming/modules/diffusionmodules/model.py`` (GroupNorm(32)
  + swish residual blocks, single-head attention with 1x1 q/k/v convolutions
  and ``bmm`` + softmax, pad-then-stride-2 downsampling, nearest upsampling);
- quantizer: ``VectorQuantizer2`` (``legacy=False``): squared distances through
  one matmul, argmin, embedding lookup, straight-through estimator;
- discriminator: ``NLayerDiscriminator`` with taming's ``ActNorm`` (whose
  ``initialized.item()`` check runs on every training forward, as in taming);
- loss: ``VQLPIPSWithDiscriminator`` (L1 + LPIPS, codebook loss, hinge GAN with
  the adaptive weight from the decoder's last layer);
- optimizers: ``torch.optim.Adam`` with default settings, as taming.

One deliberate difference: taming (through PyTorch Lightning) runs the
autoencoder forward twice per step, once for each optimizer. This step reuses
the reconstruction for the discriminator update, as vqtk does, so both sides
do the same work. LPIPS uses an untrained backbone: weights do not change the
cost, and nothing is downloaded.
"""

from __future__ import annotations

import contextlib
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def Normalize(channels: int) -> nn.GroupNorm:  # noqa: N802 - taming's name
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


def nonlinearity(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)


class ResnetBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, dropout: float):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.norm1 = Normalize(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, 1, 1)
        self.norm2 = Normalize(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1)
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(nonlinearity(self.norm1(x)))
        h = self.conv2(self.dropout(nonlinearity(self.norm2(h))))
        if self.in_channels != self.out_channels:
            x = self.nin_shortcut(x)
        return x + h


class AttnBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.norm = Normalize(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        q, k, v = self.q(h), self.k(h), self.v(h)
        b, c, hh, ww = q.shape
        q = q.reshape(b, c, hh * ww).permute(0, 2, 1)  # b, hw, c
        k = k.reshape(b, c, hh * ww)  # b, c, hw
        w = torch.bmm(q, k) * (int(c) ** -0.5)
        w = F.softmax(w, dim=2)
        v = v.reshape(b, c, hh * ww)
        h = torch.bmm(v, w.permute(0, 2, 1)).reshape(b, c, hh, ww)
        return x + self.proj_out(h)


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 2, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0))


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Encoder(nn.Module):
    def __init__(self, *, ch: int, ch_mult: Sequence[int], num_res_blocks: int, attn_resolutions: Sequence[int],
                 z_channels: int, resolution: int, in_channels: int = 3, dropout: float = 0.0):
        super().__init__()
        self.num_resolutions = len(ch_mult)
        self.num_res_blocks = num_res_blocks
        self.conv_in = nn.Conv2d(in_channels, ch, 3, 1, 1)
        curr_res = resolution
        in_ch_mult = (1, *ch_mult)
        self.down = nn.ModuleList()
        for i_level in range(self.num_resolutions):
            block, attn = nn.ModuleList(), nn.ModuleList()
            block_in, block_out = ch * in_ch_mult[i_level], ch * ch_mult[i_level]
            for _ in range(num_res_blocks):
                block.append(ResnetBlock(block_in, block_out, dropout))
                block_in = block_out
                if curr_res in attn_resolutions:
                    attn.append(AttnBlock(block_in))
            down = nn.Module()
            down.block, down.attn = block, attn
            if i_level != self.num_resolutions - 1:
                down.downsample = Downsample(block_in)
                curr_res //= 2
            self.down.append(down)
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(block_in, block_in, dropout)
        self.mid.attn_1 = AttnBlock(block_in)
        self.mid.block_2 = ResnetBlock(block_in, block_in, dropout)
        self.norm_out = Normalize(block_in)
        self.conv_out = nn.Conv2d(block_in, z_channels, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for i_level in range(self.num_resolutions):
            for i_block in range(self.num_res_blocks):
                h = self.down[i_level].block[i_block](h)
                if len(self.down[i_level].attn) > 0:
                    h = self.down[i_level].attn[i_block](h)
            if i_level != self.num_resolutions - 1:
                h = self.down[i_level].downsample(h)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        return self.conv_out(nonlinearity(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(self, *, ch: int, ch_mult: Sequence[int], num_res_blocks: int, attn_resolutions: Sequence[int],
                 z_channels: int, resolution: int, out_ch: int = 3, dropout: float = 0.0):
        super().__init__()
        self.num_resolutions = len(ch_mult)
        self.num_res_blocks = num_res_blocks
        block_in = ch * ch_mult[-1]
        curr_res = resolution // 2 ** (self.num_resolutions - 1)
        self.conv_in = nn.Conv2d(z_channels, block_in, 3, 1, 1)
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(block_in, block_in, dropout)
        self.mid.attn_1 = AttnBlock(block_in)
        self.mid.block_2 = ResnetBlock(block_in, block_in, dropout)
        self.up = nn.ModuleList()
        for i_level in reversed(range(self.num_resolutions)):
            block, attn = nn.ModuleList(), nn.ModuleList()
            block_out = ch * ch_mult[i_level]
            for _ in range(num_res_blocks + 1):
                block.append(ResnetBlock(block_in, block_out, dropout))
                block_in = block_out
                if curr_res in attn_resolutions:
                    attn.append(AttnBlock(block_in))
            up = nn.Module()
            up.block, up.attn = block, attn
            if i_level != 0:
                up.upsample = Upsample(block_in)
                curr_res *= 2
            self.up.insert(0, up)
        self.norm_out = Normalize(block_in)
        self.conv_out = nn.Conv2d(block_in, out_ch, 3, 1, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(self.conv_in(z))))
        for i_level in reversed(range(self.num_resolutions)):
            for i_block in range(self.num_res_blocks + 1):
                h = self.up[i_level].block[i_block](h)
                if len(self.up[i_level].attn) > 0:
                    h = self.up[i_level].attn[i_block](h)
            if i_level != 0:
                h = self.up[i_level].upsample(h)
        return self.conv_out(nonlinearity(self.norm_out(h)))


class VectorQuantizer(nn.Module):
    """taming's ``VectorQuantizer2`` with ``legacy=False``: beta weights the commitment term."""

    def __init__(self, n_e: int, e_dim: int, beta: float):
        super().__init__()
        self.n_e, self.e_dim, self.beta = n_e, e_dim, beta
        self.embedding = nn.Embedding(n_e, e_dim)
        self.embedding.weight.data.uniform_(-1.0 / n_e, 1.0 / n_e)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z = z.permute(0, 2, 3, 1).contiguous()
        z_flat = z.view(-1, self.e_dim)
        d = (z_flat.pow(2).sum(dim=1, keepdim=True) + self.embedding.weight.pow(2).sum(dim=1)
             - 2 * z_flat @ self.embedding.weight.t())
        indices = torch.argmin(d, dim=1)
        z_q = self.embedding(indices).view(z.shape)
        loss = self.beta * torch.mean((z_q.detach() - z) ** 2) + torch.mean((z_q - z.detach()) ** 2)
        z_q = z + (z_q - z).detach()
        return z_q.permute(0, 3, 1, 2).contiguous(), loss, indices.view(z.shape[:-1])

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        return self.embedding(indices).permute(0, 3, 1, 2).contiguous()


class VQModel(nn.Module):
    """encoder -> quant_conv -> quantize -> post_quant_conv -> decoder (taming's ``VQModel``)."""

    def __init__(self, *, arch: dict, n_embed: int, embed_dim: int, beta: float = 0.25):
        super().__init__()
        self.encoder = Encoder(**arch)
        self.decoder = Decoder(**arch)
        self.quantize = VectorQuantizer(n_embed, embed_dim, beta)
        self.quant_conv = nn.Conv2d(arch["z_channels"], embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(embed_dim, arch["z_channels"], 1)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.quantize(self.quant_conv(self.encoder(x)))

    def decode(self, quant: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(quant))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        quant, loss, _ = self.encode(x)
        return self.decode(quant), loss

    @torch.no_grad()
    def encode_to_indices(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode(x)[2]

    @torch.no_grad()
    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        return self.decode(self.quantize.lookup(indices))


class ActNorm(nn.Module):
    """taming's ``ActNorm`` (``logdet=False``, ``affine=True``)."""

    def __init__(self, num_features: int):
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(1, num_features, 1, 1))
        self.scale = nn.Parameter(torch.ones(1, num_features, 1, 1))
        self.register_buffer("initialized", torch.tensor(0, dtype=torch.uint8))

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        flat = x.permute(1, 0, 2, 3).contiguous().view(x.shape[1], -1)
        mean = flat.mean(1).view(1, -1, 1, 1)
        std = flat.std(1).view(1, -1, 1, 1)
        self.loc.data.copy_(-mean)
        self.scale.data.copy_(1 / (std + 1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.initialized.item() == 0:
            self.initialize(x)
            self.initialized.fill_(1)
        return self.scale * (x + self.loc)


class NLayerDiscriminator(nn.Module):
    """taming's PatchGAN with ``use_actnorm=True`` (so its inner convolutions keep their bias), ``weights_init``."""

    def __init__(self, *, input_nc: int = 3, ndf: int = 64, n_layers: int = 3):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(input_nc, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2**n, 8)
            layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, 2, 1), ActNorm(ndf * mult),
                       nn.LeakyReLU(0.2, True)]
        prev, mult = mult, min(2**n_layers, 8)
        layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, 1, 1), ActNorm(ndf * mult),
                   nn.LeakyReLU(0.2, True), nn.Conv2d(ndf * mult, 1, 4, 1, 1)]
        self.main = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


#: where LPIPS taps each torchvision backbone's ``features`` (slice ends) and the tapped widths
_LPIPS_TAPS = {
    "vgg": ((4, 9, 16, 23, 30), (64, 128, 256, 512, 512)),
    "alex": ((2, 5, 8, 10, 12), (64, 192, 384, 256, 256)),
    "squeeze": ((2, 5, 8, 10, 11, 12, 13), (64, 128, 256, 384, 384, 512, 512)),
}


class LPIPS(nn.Module):
    """LPIPS (Zhang et al. 2018) over a frozen torchvision backbone, untrained (no download)."""

    def __init__(self, net: str = "vgg"):
        super().__init__()
        import torchvision

        features = {
            "vgg": lambda: torchvision.models.vgg16(weights=None).features,
            "alex": lambda: torchvision.models.alexnet(weights=None).features,
            "squeeze": lambda: torchvision.models.squeezenet1_1(weights=None).features,
        }[net]()
        ends, widths = _LPIPS_TAPS[net]
        starts = (0, *ends[:-1])
        self.slices = nn.ModuleList(nn.Sequential(*[features[i] for i in range(a, b)]) for a, b in zip(starts, ends))
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in widths)
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        for m in self.modules():
            if isinstance(m, nn.ReLU):
                m.inplace = False
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "LPIPS":
        return super().train(False)

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        h, out = (x - self.shift) / self.scale, []
        for s in self.slices:
            h = s(h)
            out.append(h / (torch.sqrt(torch.sum(h**2, dim=1, keepdim=True)) + 1e-10))
        return out

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        fa, fb = self._features(a), self._features(b)
        return sum(lin((x - y) ** 2).mean(dim=(2, 3), keepdim=True) for lin, x, y in zip(self.lins, fa, fb))


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * (torch.mean(F.relu(1.0 - logits_real)) + torch.mean(F.relu(1.0 + logits_fake)))


class TamingTrainStep:
    """One stage-1 step: autoencoder update (L1 + LPIPS + codebook + adaptive hinge GAN), then discriminator update.

    Args:
        arch: encoder/decoder settings (ch, ch_mult, num_res_blocks, attn_resolutions,
            z_channels, resolution, dropout).
        n_embed, embed_dim, beta: the codebook.
        ndf, n_layers: the PatchGAN.
        lpips_net: "vgg", "alex" or "squeeze"; None leaves LPIPS out.
        perceptual_weight, disc_weight, codebook_weight: loss weights.
        lr, betas: both Adam optimizers.
        device: where everything lives.
        precision: "fp32" or "bf16" (autocast around the forward passes).
        channels_last: convolutional modules and inputs in channels_last.
        compile: ``torch.compile`` the encoder, decoder and discriminator in place.
    """

    def __init__(self, *, arch: dict, n_embed: int, embed_dim: int, beta: float = 0.25, ndf: int = 64,
                 n_layers: int = 3, lpips_net: str | None = "vgg", perceptual_weight: float = 1.0,
                 disc_weight: float = 0.75, codebook_weight: float = 1.0, lr: float = 4.5e-6,
                 betas: tuple[float, float] = (0.5, 0.9), device: torch.device | str = "cpu",
                 precision: str = "fp32", channels_last: bool = False, compile: bool = False):
        self.device = torch.device(device)
        self.model = VQModel(arch=arch, n_embed=n_embed, embed_dim=embed_dim, beta=beta).to(self.device)
        self.disc = NLayerDiscriminator(input_nc=3, ndf=ndf, n_layers=n_layers).to(self.device)
        self.lpips = LPIPS(lpips_net).to(self.device) if lpips_net else None
        self.perceptual_weight, self.disc_weight, self.codebook_weight = perceptual_weight, disc_weight, codebook_weight
        self.precision, self.channels_last = precision, channels_last
        if channels_last:
            for m in (self.model, self.disc, self.lpips):
                if m is not None:
                    m.to(memory_format=torch.channels_last)
        self.opt_ae = torch.optim.Adam(self.model.parameters(), lr=lr, betas=betas)
        self.opt_disc = torch.optim.Adam(self.disc.parameters(), lr=lr, betas=betas)
        if compile:
            # the adaptive weight's retain_graph=True grads through the compiled decoder need this
            torch._functorch.config.donated_buffer = False
            for m in (self.model.encoder, self.model.decoder, self.disc):
                m.compile()

    def autocast(self):
        if self.precision == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def adaptive_weight(self, nll_loss: torch.Tensor, g_loss: torch.Tensor) -> torch.Tensor:
        last_layer = self.model.decoder.conv_out.weight
        nll_grads = torch.autograd.grad(nll_loss, last_layer, retain_graph=True)[0]
        g_grads = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
        d_weight = torch.norm(nll_grads) / (torch.norm(g_grads) + 1e-4)
        return torch.clamp(d_weight, 0.0, 1e4).detach() * self.disc_weight

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.prepare(x)
        self.model.train()
        self.disc.train()
        # generator update (Lightning's toggle_optimizer freezes the other optimizer's parameters)
        self.disc.requires_grad_(False)
        self.opt_ae.zero_grad(set_to_none=True)
        with self.autocast():
            xrec, qloss = self.model(x)
            rec_loss = torch.abs(x.contiguous() - xrec.contiguous())
            if self.lpips is not None:
                rec_loss = rec_loss + self.perceptual_weight * self.lpips(x.contiguous(), xrec.contiguous())
            nll_loss = torch.mean(rec_loss)
            g_loss = -torch.mean(self.disc(xrec.contiguous()))
            d_weight = self.adaptive_weight(nll_loss, g_loss)
            loss = nll_loss + d_weight * g_loss + self.codebook_weight * qloss.mean()
        loss.backward()
        self.opt_ae.step()
        # discriminator update
        self.disc.requires_grad_(True)
        self.opt_disc.zero_grad(set_to_none=True)
        with self.autocast():
            logits_real = self.disc(x.contiguous().detach())
            logits_fake = self.disc(xrec.contiguous().detach())
            d_loss = hinge_d_loss(logits_real, logits_fake)
        d_loss.backward()
        self.opt_disc.step()
        return {"loss": loss.detach(), "d_loss": d_loss.detach()}
