"""AdamW over the trainable parameters only.

When blocks freeze, the optimizer is rebuilt over the parameters that still train and their
moments are carried over; frozen parameters leave with their state (no grads, no moments:
the memory saving of LayerLock). Parameter order follows ``named_parameters``, so a resumed
run rebuilds an optimizer whose ``state_dict`` layout matches the saved one.
"""
from __future__ import annotations

import torch
from torch import nn


def no_decay(name: str, p: torch.Tensor) -> bool:
    """Biases, norms, position embeddings and the mask token are not weight-decayed."""
    return p.ndim <= 1 or name.endswith("pos_embed") or name.endswith("mask_token")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay, plain = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (plain if no_decay(name, p) else decay).append(p)
    return [g for g in ({"params": decay, "weight_decay": weight_decay, "name": "decay"},
                        {"params": plain, "weight_decay": 0.0, "name": "no_decay"}) if g["params"]]


def build_optimizer(model: nn.Module, recipe: dict, previous: torch.optim.Optimizer | None = None,
                    fused: bool | None = None) -> torch.optim.AdamW:
    """AdamW over ``model``'s trainable parameters; moments of parameters that were already in
    ``previous`` are carried over, those of parameters no longer trainable are dropped."""
    opt = torch.optim.AdamW(param_groups(model, recipe["weight_decay"]), lr=recipe["lr"],
                            betas=(recipe["beta1"], recipe["beta2"]), fused=fused)
    if previous is not None:
        for group in opt.param_groups:
            for p in group["params"]:
                if p in previous.state:
                    opt.state[p] = previous.state[p]
    return opt


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr
