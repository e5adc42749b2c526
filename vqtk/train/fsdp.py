"""How a stage-2 module is trained over the processes: whole on each (DDP) or sharded (FSDP2).

:class:`Replicated` is the default: one process, or DistributedDataParallel, with
the optimizer over the whole module. :class:`Sharded` shards the module with
PyTorch's own FSDP2 (``torch.distributed.fsdp.fully_shard``): each block the
module declares (``Prior.blocks()``) is one unit, the rest goes with the root;
bf16 runs keep fp32 master weights and gather them in bf16 with gradients reduced
in fp32 (``MixedPrecisionPolicy``); blocks may recompute their activations in the
backward pass (activation checkpointing).

Both give the trainer the same things: the loss module to call (under autocast
for bf16), the optimizer, the weights and optimizer state to checkpoint and
their restore, and the module to sample from. Checkpoints do not depend on the
strategy: FSDP's weights and optimizer state are gathered whole onto rank 0's
host memory (``get_model_state_dict`` / ``get_optimizer_state_dict`` with
``full_state_dict=True, cpu_offload=True``) and written as one safetensors file,
the optimizer state renumbered the way ``Optimizer.state_dict()`` numbers it, so
a checkpoint resumes under either strategy and loads without a process group.
Gathering takes every process: :meth:`Sharded.gather` is called by all of them
right before the main process samples or saves. Rank 0 samples from an unsharded
copy of the module kept in host memory and loaded with the gathered weights.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import warnings
from typing import Any, Optional, Sequence

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed._composable import checkpoint

from vqtk.io.module_state import load_state_strict
from vqtk.recipe.schema import OptimizerSection
from vqtk.train.loop import make_optimizer

log = logging.getLogger("vqtk")

_DTYPES = {"fp32": None, "bf16": torch.bfloat16}


def checkpoint_blocks(blocks: Sequence[nn.Module]) -> None:
    """Recompute each block's activations in the backward pass (torch's composable ``checkpoint``, in place)."""
    for block in blocks:
        checkpoint(block)


class Replicated:
    """``module`` trained whole on every process (itself, or its DDP wrapper ``wrapped``).

    Args:
        wrapped: what the trainer calls (``module`` or ``DistributedDataParallel(module)``).
        inner: the submodule whose weights are checkpointed and sampled from.
        precision: "fp32", or "bf16" (the call runs under ``torch.autocast``).
        optimizer: the AdamW settings.
    """

    def __init__(self, wrapped: nn.Module, inner: nn.Module, *, precision: str, optimizer: OptimizerSection):
        self.module, self.inner = wrapped, inner
        self.dtype = _DTYPES[precision]
        self.device_type = next(inner.parameters()).device.type
        self.optimizer = make_optimizer(inner.parameters(), optimizer)

    def __call__(self, *args: Any) -> Any:
        autocast = (torch.autocast(self.device_type, dtype=self.dtype) if self.dtype is not None
                    else contextlib.nullcontext())
        with autocast:
            return self.module(*args)

    def gather(self) -> None:
        """Make :meth:`model_state`, :meth:`optimizer_state` and :meth:`plain` current (nothing to do here)."""

    def model_state(self) -> nn.Module | dict[str, torch.Tensor]:
        """What the checkpoint stores for ``inner``: the module or its full state dict."""
        return self.inner

    def optimizer_state(self) -> dict:
        """The optimizer state as ``Optimizer.state_dict()`` numbers it."""
        return self.optimizer.state_dict()

    def load_model(self, state: dict[str, torch.Tensor], where: str) -> None:
        load_state_strict(self.inner, state, where)

    def load_optimizer(self, state: dict) -> None:
        self.optimizer.load_state_dict(state)

    def plain(self) -> nn.Module:
        """``inner`` as an ordinary module, to sample from (main process)."""
        return self.inner


class Sharded(Replicated):
    """``module`` sharded over the processes with FSDP2 (see the module docstring).

    Args:
        module: the root to shard (its forward is the training call).
        inner: the submodule whose weights are checkpointed and sampled from.
        blocks: submodules of ``inner`` sharded as units of their own, in order (may be empty).
        precision: "fp32", or "bf16": parameters gathered in bf16, gradients reduced in fp32.
        checkpointing: recompute each block's activations in the backward pass.
        optimizer: the AdamW settings.
        main: whether this process samples (it keeps an unsharded copy in host memory).
        device: the training device of this process; ``module`` may still be on the CPU.
    """

    def __init__(self, module: nn.Module, inner: nn.Module, *, blocks: Sequence[nn.Module], precision: str,
                 checkpointing: bool, optimizer: OptimizerSection, main: bool, device: torch.device):
        # FSDP2 is imported when used: it imports DTensor, a second or two that other commands need not wait
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        self.device = device
        self._copy = copy.deepcopy(inner).cpu().eval().requires_grad_(False) if main else None
        dtype = _DTYPES[precision]
        policy = MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32 if dtype else None)
        # one mesh dimension over every process, on the training device; fully_shard moves each
        # process's shard there, so the whole module never has to fit one device
        mesh = init_device_mesh(device.type, (dist.get_world_size(),))
        if checkpointing:
            checkpoint_blocks(blocks)  # before sharding, as torch's composable APIs expect
        for block in blocks:
            fully_shard(block, mesh=mesh, mp_policy=policy)
        fully_shard(module, mesh=mesh, mp_policy=policy)
        #: where ``inner`` sits in ``module`` ("" when it is the module)
        self.prefix = next(name for name, m in module.named_modules() if m is inner)
        super().__init__(module, inner, precision=precision, optimizer=optimizer)
        self._state: Optional[dict[str, torch.Tensor]] = None
        self._opt_state: Optional[dict] = None
        self._copy_loaded = False
        log.info("fsdp: %d blocks sharded over the processes%s", len(blocks),
                 ", activation checkpointing" if checkpointing else "")

    def __call__(self, *args: Any) -> Any:
        if self._copy is not None and self._copy_loaded:
            self._copy.cpu()  # the sampling copy leaves the device while training
        with warnings.catch_warnings():
            # a block returning a view is fine unless it is then changed in place, which
            # Prior.blocks() rules out (the built-in x-transformers blocks add residuals out of place)
            warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module .* returned a view tensor")
            return super().__call__(*args)

    def _full_name(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def _order(self) -> list[str]:
        """The names (relative to the root) of the optimizer's parameters, in ``state_dict()`` numbering."""
        names = {id(p): name for name, p in self.module.named_parameters()}
        return [names[id(p)] for group in self.optimizer.param_groups for p in group["params"]]

    def gather(self) -> None:
        """Gather the full weights and optimizer state onto the main process's host memory (every process calls)."""
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
            get_optimizer_state_dict,
        )

        full = StateDictOptions(full_state_dict=True, cpu_offload=True)
        state = get_model_state_dict(self.module, options=full)
        opt = get_optimizer_state_dict(self.module, self.optimizer, options=full)
        self._copy_loaded = False
        if self._copy is None:
            return
        start = len(self.prefix) + 1 if self.prefix else 0
        self._state = {k[start:]: v for k, v in state.items()}
        index = {name: i for i, name in enumerate(self._order())}
        self._opt_state = {"state": {index[k]: v for k, v in opt["state"].items()},
                           "param_groups": [{**g, "params": [index[k] for k in g["params"]]}
                                            for g in opt["param_groups"]]}

    def model_state(self) -> dict[str, torch.Tensor]:
        assert self._state is not None, "gather() first"
        return self._state

    def optimizer_state(self) -> dict:
        assert self._opt_state is not None, "gather() first"
        return self._opt_state

    def load_model(self, state: dict[str, torch.Tensor], where: str) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        if self._copy is not None:  # names mismatched tensors in one line (the main process's error)
            load_state_strict(self._copy, state, where)
        set_model_state_dict(self.module, {self._full_name(k): v for k, v in state.items()},
                             options=StateDictOptions(full_state_dict=True))

    def load_optimizer(self, state: dict) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        names = self._order()
        full = {"state": {names[int(i)]: v for i, v in state["state"].items()},
                "param_groups": [{**g, "params": [names[int(i)] for i in g["params"]]} for g in state["param_groups"]]}
        set_optimizer_state_dict(self.module, self.optimizer, full, options=StateDictOptions(full_state_dict=True))

    def plain(self) -> nn.Module:
        assert self._copy is not None and self._state is not None, "gather() first, on the main process"
        if not self._copy_loaded:
            self._copy.load_state_dict(self._state)
            self._copy_loaded = True
        return self._copy.to(self.device)
