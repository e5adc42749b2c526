"""Loading state into modules: whole weights strictly, and a component's own state (buffers, extra state)."""

from __future__ import annotations

from typing import Any

import torch

from vqtk.errors import VqtkError


def component_state(module: torch.nn.Module) -> dict[str, Any]:
    """A component's own state: its buffers and declared extra state, not its parameters.

    What a training-only component (a loss) carries from step to step (LeCam's
    moving averages); its parameters, if any, are fixed weights such as LPIPS's
    backbone, which the recipe rebuilds.
    """
    params = {name for name, _ in module.named_parameters()}
    return {k: v for k, v in module.state_dict().items() if k not in params}


def load_component_state(module: torch.nn.Module, state: dict[str, Any], where: str) -> None:
    """Restore what :func:`component_state` saved, naming any mismatch."""
    own = component_state(module)
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state)
                   if torch.is_tensor(own[k]) and torch.is_tensor(state[k]) and own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        raise VqtkError(f"{where}: state does not match the component (missing {missing[:5]}, "
                        f"unexpected {unexpected[:5]}, shape mismatch {wrong[:5]})")
    module.load_state_dict(state, strict=False)


def load_state_strict(module: torch.nn.Module, state: dict, where: str) -> None:
    """Load a state dict, naming mismatched tensors in a one-line error."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state)
                   if torch.is_tensor(own[k]) and torch.is_tensor(state[k]) and own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            parts.append("shape mismatch: " + ", ".join(
                f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in wrong[:5]))
        if missing:
            parts.append(f"missing {len(missing)}: {', '.join(missing[:5])}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)}: {', '.join(unexpected[:5])}")
        raise VqtkError(f"{where}: weights do not match the model ({'; '.join(parts)})")
    module.load_state_dict(state)
