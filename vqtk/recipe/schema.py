"""The recipe schema: the core's own sections, and references to components.

A recipe is TOML. Component tables (``[model.encoder]``, ``[data]``,
``[loss.NAME]``...) hold ``type = "registered name"`` plus that component's
config fields; everything else is described by the attrs classes below.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal, Optional

import attrs

from vqtk.config import in_range, non_negative, positive

SEED_MAX = 2**32 - 1


def _device_name(_inst: Any, _attr: Any, value: str) -> None:
    if not re.fullmatch(r"auto|cpu|mps|(cuda|xpu)(:\d+)?", value):
        raise ValueError(f'expected "auto", "cpu", "cuda", "cuda:N", "mps" or "xpu", got "{value}"')


def _distinct(_inst: Any, _attr: Any, value: tuple) -> None:
    repeated = sorted({v for v in value if value.count(v) > 1})
    if repeated:
        raise ValueError("names " + ", ".join(f'"{v}"' for v in repeated) + " more than once")


def _odd(_inst: Any, _attr: Any, value: int) -> None:
    if value % 2 == 0:
        raise ValueError(f"must be odd (the latent grid keeps its size), got {value}")


@attrs.define(kw_only=True)
class ComponentRef:
    """A component table after validation: its registered name and structured config."""

    kind: ClassVar[str] = ""
    type: str
    config: Any


class EncoderRef(ComponentRef):
    kind = "encoder"


class QuantizerRef(ComponentRef):
    kind = "quantizer"


class DecoderRef(ComponentRef):
    kind = "decoder"


class DiscriminatorRef(ComponentRef):
    kind = "discriminator"


class DataRef(ComponentRef):
    kind = "data"


class PriorRef(ComponentRef):
    kind = "prior"


@attrs.define(kw_only=True)
class LossRef(ComponentRef):
    """A ``[loss.NAME]`` table: a loss component plus the weight the trainer gives it."""

    kind = "loss"
    weight: float = 1.0


@attrs.define(kw_only=True)
class ModelSection:
    """``[model]``: the four learned parts of a VQGAN (the discriminator is optional)."""

    encoder: EncoderRef
    quantizer: QuantizerRef
    decoder: DecoderRef
    discriminator: Optional[DiscriminatorRef] = None
    #: kernel of the convolutions between encoder, quantizer and decoder (quant_conv,
    #: post_quant_conv): 1 as in taming and LlamaGen, 3 as in VAR's VQVAE (odd sizes)
    quant_conv_kernel: int = attrs.field(default=1, validator=[positive, _odd])


@attrs.define(kw_only=True)
class OptimizerSection:
    """AdamW settings and the learning-rate schedule of one optimizer."""

    lr: float = attrs.field(default=1e-4, validator=positive)
    betas: tuple[float, float] = (0.5, 0.9)
    eps: float = attrs.field(default=1e-8, validator=positive)
    weight_decay: float = attrs.field(default=0.0, validator=non_negative)
    #: linear warm-up from 0 over this many steps
    warmup_steps: int = attrs.field(default=0, validator=non_negative)
    #: after warm-up: keep lr, or decay it to ``min_lr`` by the last step
    schedule: Literal["constant", "cosine", "linear"] = "constant"
    min_lr: float = attrs.field(default=0.0, validator=non_negative)
    #: clip the global gradient norm to this value (0 disables clipping)
    grad_clip: float = attrs.field(default=0.0, validator=non_negative)


@attrs.define(kw_only=True)
class TrainSection:
    """``[train]``: the stage-1 (tokenizer) training run."""

    steps: int = attrs.field(validator=positive)
    batch_size: int = attrs.field(validator=positive)
    #: micro-batches accumulated per optimizer step (effective batch = batch_size * grad_accum)
    grad_accum: int = attrs.field(default=1, validator=positive)
    #: seeds every random number generator (numpy's accepts 0 .. 2**32 - 1)
    seed: int = attrs.field(default=0, validator=in_range(0, SEED_MAX))
    #: "auto" picks CUDA when available, else CPU; or "cpu", "cuda", "cuda:1"...
    device: str = attrs.field(default="auto", validator=_device_name)
    #: autocast precision (bf16 works on CPU and CUDA; fp16 adds a gradient scaler);
    #: quantizer distances and loss statistics always run in fp32
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    #: consecutive steps with a non-finite loss that are skipped before the run stops
    max_nonfinite_steps: int = attrs.field(default=20, validator=positive)
    #: keep an exponential moving average of the tokenizer's weights (e.g. 0.999) for
    #: evaluation, sampling and ``vqtk.load``; absent disables it
    ema_decay: Optional[float] = attrs.field(default=None, validator=in_range(0.0, 0.999999))
    #: ``torch.compile`` the encoder, decoder and discriminator
    compile: bool = False
    #: channels-last memory format for the convolutional parts
    channels_last: bool = False
    #: data-loading processes per training process (0: load in the training process itself);
    #: absent: min(4, CPUs per process - 1) with a GPU, 0 when training on CPU
    num_workers: Optional[int] = attrs.field(default=None, validator=non_negative)
    log_every: int = attrs.field(default=10, validator=positive)
    image_every: int = attrs.field(default=500, validator=positive)
    checkpoint_every: int = attrs.field(default=500, validator=positive)
    #: held-out batches scored (PSNR, LPIPS) at each image/ checkpoint interval
    eval_batches: int = attrs.field(default=2, validator=non_negative)
    #: steps in the rolling window over which codebook usage and dead codes are measured
    health_window: int = attrs.field(default=100, validator=positive)
    #: warn once per crossing (and log codebook/low_usage = 1) when a codebook's windowed
    #: usage is below this fraction; 0 = off
    min_usage: float = attrs.field(default=0.0, validator=in_range(0.0, 1.0))
    #: at log steps, set codes unused for health_window steps to recent encoder outputs
    #: (quantizers that are vqtk.interfaces.RestartableQuantizer)
    restart_dead_codes: bool = False
    #: recent quantizer inputs kept for restarts
    restart_reservoir: int = attrs.field(default=1024, validator=positive)
    #: experiment trackers that also get the metrics and images of both stages (main process only):
    #: "tensorboard" (pip install "vqtk[tensorboard]"), "wandb" (pip install "vqtk[wandb]")
    loggers: tuple[Literal["tensorboard", "wandb"], ...] = attrs.field(default=(), validator=_distinct)
    optimizer: OptimizerSection = attrs.Factory(OptimizerSection)
    disc_optimizer: OptimizerSection = attrs.Factory(OptimizerSection)


def _prior_optimizer() -> OptimizerSection:
    return OptimizerSection(lr=3e-4, betas=(0.9, 0.95), weight_decay=0.01, warmup_steps=100, schedule="cosine")


@attrs.define(kw_only=True)
class PriorTrainSection:
    """``[prior_train]``: the stage-2 run (a prior over a frozen tokenizer's codes)."""

    steps: int = attrs.field(validator=positive)
    batch_size: int = attrs.field(validator=positive)
    #: seeds every random number generator (numpy's accepts 0 .. 2**32 - 1)
    seed: int = attrs.field(default=0, validator=in_range(0, SEED_MAX))
    #: times the training set is encoded into the code cache (random crops differ per pass)
    encode_passes: int = attrs.field(default=1, validator=positive)
    log_every: int = attrs.field(default=10, validator=positive)
    sample_every: int = attrs.field(default=1000, validator=positive)
    checkpoint_every: int = attrs.field(default=1000, validator=positive)
    #: samples in each written grid
    num_samples: int = attrs.field(default=16, validator=positive)
    #: also sample this larger code grid (rows, columns) at the end, by sliding window
    large_grid: Optional[tuple[int, int]] = None
    temperature: float = attrs.field(default=1.0, validator=positive)
    top_k: Optional[int] = attrs.field(default=None, validator=positive)
    top_p: Optional[float] = attrs.field(default=None, validator=positive)
    #: classifier-free guidance scale of the sample grids (1 = off; needs a prior trained with label dropout)
    cfg_scale: float = attrs.field(default=1.0, validator=non_negative)
    #: how the prior is spread over torchrun's processes: "ddp" (a whole copy on each) or
    #: "fsdp" (PyTorch's FSDP2: parameters, gradients and optimizer state sharded; one process
    #: trains the prior whole); checkpoints are the same single file either way
    strategy: Literal["ddp", "fsdp"] = "ddp"
    #: "bf16" autocasts the prior (under fsdp: parameters gathered in bf16, gradients reduced in fp32)
    precision: Literal["fp32", "bf16"] = "fp32"
    #: recompute each transformer block's activations in the backward pass (less memory, about
    #: a third more compute); the blocks are those the prior declares (``Prior.blocks()``)
    activation_checkpointing: bool = False
    optimizer: OptimizerSection = attrs.Factory(_prior_optimizer)


@attrs.define(kw_only=True)
class Recipe:
    """A whole recipe after ``extends`` and overrides are applied and every table is checked."""

    model: ModelSection
    data: DataRef
    train: TrainSection
    loss: dict[str, LossRef] = attrs.Factory(dict)
    #: stage 2: a prior over the tokenizer's codes (optional)
    prior: Optional[PriorRef] = None
    prior_train: Optional[PriorTrainSection] = None
    #: a free-form label stored with checkpoints
    name: str = ""

    def __attrs_post_init__(self) -> None:
        if (self.prior is None) != (self.prior_train is None):
            raise ValueError("[prior] and [prior_train] go together: give both or neither")
