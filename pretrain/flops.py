"""Analytic FLOPs of one pretraining step, and the saving LayerLock's schedule predicts.

Per block on n tokens of width C with MLP width M (multiply-add = 2 FLOPs):
``2n(4C² + 2CM)`` for the projections and MLP plus ``4n²C`` for attention scores and values.
A trainable block costs forward + backward = 3× its forward; a frozen block (or the no-grad
target pass) costs its forward only. In a SimpleMAE step:

- embedding: conv on all N tubelets (trainable only before the first freeze);
- student encoder: blocks ``0..D-k-1`` on the n_vis visible tokens (frozen prefix: 1×, rest 3×);
- target pass (latent phases): blocks ``0..max(targets)`` on all N tokens, forward only
  (with ``frozen_input=reuse`` this pass also provides the frozen prefix, which is then not
  run on the visible tokens);
- decoder: the last k blocks on all N tokens (3×); heads on their tokens (3×).

The saving of freezing is thus (3-1)× the frozen blocks' visible-token forward, and the latent
target costs one forward of the frozen prefix on *all* tokens. At 95% masking the second term
is ~7× the first: LayerLock's latent phase costs more FLOPs per step than MAE, while
progressive freezing with a pixel loss saves (see benchmarks/layerlock_savings.py).
"""
from __future__ import annotations

import math

from bench.models.vit import ViTConfig
from pretrain.layerlock import PIXEL, Phase, Schedule
from pretrain.masking import num_visible


def block_forward_flops(n: int, dim: int, mlp: int, attention: bool = True) -> float:
    return 2.0 * n * (4 * dim * dim + 2 * dim * mlp) + (4.0 * n * n * dim if attention else 0.0)


def step_flops(arch: ViTConfig, recipe: dict, phase: Phase, batch: int, num_tokens: int,
               attention: bool = True) -> dict[str, float]:
    """{"total", "no_grad_forward", "trainable_forward"} FLOPs of one step on ``batch`` clips.

    ``total`` = no-grad forwards + 3 × trainable forwards (+ 2 × the trainable embedding:
    forward and weight gradient, no gradient for the pixels). ``attention=False`` leaves out the
    attention-score FLOPs (``torch.utils.flop_counter`` does not count SDPA on CPU)."""
    n_all, n_vis = num_tokens, num_visible(num_tokens, recipe["mask_ratio"])
    depth, k, frozen = arch.depth, recipe["decoder_depth"], phase.frozen
    C, M = arch.embed_dim, arch.mlp_dim
    patch = math.prod(arch.patch_size) * arch.in_chans
    blk = lambda n: block_forward_flops(n, C, M, attention)  # noqa: E731
    reuse = recipe.get("frozen_input", "visible") == "reuse" and frozen > 0
    embed = 2.0 * n_all * patch * C
    no_grad = embed if frozen else 0.0
    target_depth = max(phase.targets) + 1 if phase.loss == "latent" else 0
    no_grad += max(target_depth, frozen if reuse else 0) * blk(n_all)
    if not reuse:
        no_grad += frozen * blk(n_vis)
    trained = (depth - k - frozen) * blk(n_vis) + k * blk(n_all)
    if phase.loss == "pixel":
        trained += 2.0 * (n_all - n_vis) * C * patch
    else:
        n_out = n_all if recipe["latent_loss_on"] == "all" else n_all - n_vis
        trained += len(phase.targets) * 2.0 * n_out * C * C
    total = no_grad + 3.0 * trained + (0.0 if frozen else 2.0 * embed)
    return {"total": batch * total, "no_grad_forward": batch * no_grad, "trainable_forward": batch * trained}


def schedule_flops(arch: ViTConfig, recipe: dict, schedule: Schedule, batch: int, num_tokens: int) -> dict[str, float]:
    """Total FLOPs of a run under its recipe and ``schedule`` vs the same number of MAE steps, and the saving."""
    total = sum((b - a) * step_flops(arch, recipe, ph, batch, num_tokens)["total"] for a, b, ph in schedule.segments())
    mae = recipe["steps"] * step_flops(arch, recipe, PIXEL, batch, num_tokens)["total"]
    return {"run": total, "mae": mae, "saving": 1.0 - total / mae}
