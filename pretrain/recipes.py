"""The recipe table: objective and schedule of every ``<family>_<size>`` model.

A recipe is derived from the model name (family -> objective, size -> schedule scale) and every
field can be overridden from the command line (``train.steps=500``, ``train.lr=3e-4`` ...).
:func:`resolve_recipe` applies the overrides, checks them and fills the derived fields through
:func:`resolve_schedule` (the whole LayerLock schedule and its paper shape are described in
:mod:`pretrain.layerlock`); the resolved dict is what the training state and the checkpoint sidecar record.

Every paper-scale size (s to e) has the shape of the paper's ViT-G schedule (pixel phase 32% of
the run, last freeze at 94%, 2/3 of the blocks frozen), so ``layerlock_g`` reproduces its 160K /
10K / 32 exactly. Only the ViT-G shape is taken from the paper; total steps, batch sizes and
learning rates of the other sizes are our choices (untuned). The CPU size ``t`` keeps the shape
with a longer pixel phase (first half), 2400 steps at batch 8 (``make demo`` trains it on a
4096-clip split) and 75% masking: the 600 steps it had before left ``mae_t`` at effective rank 10
and every self-supervised row at or below the untrained encoder; at 95% masking (26 visible tokens
of 512) ``layerlock_t`` cleared the untrained encoder on one trained-readout task of five, at 75%
on all five (docs/reproduction.md). ``make demo``
evaluates the committed checkpoints; docs/reproduction.md has each recipe's measured training time
(the latent objectives' target pass runs the frozen prefix on all 512 tokens, so their steps cost more).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Mapping

from bench.errors import ConfigError
from bench.registry import resolve_model
from bench.schema import Rule, number
from pretrain.layerlock import Schedule

OBJECTIVES = ("mae", "layerlock", "latent_nofreeze")


@dataclass
class Recipe:
    """Every knob of a pretraining run. ``None`` fields are derived by :func:`resolve_recipe`."""

    objective: str = "mae"              # mae | layerlock | latent_nofreeze
    steps: int = 2000
    batch_size: int = 8                 # global batch (split evenly over DDP ranks)
    lr: float = 1e-3                    # peak learning rate
    min_lr_ratio: float = 0.01          # cosine floor, as a fraction of lr
    warmup_steps: int | None = None     # None -> warmup_frac * steps
    warmup_frac: float = 0.05
    weight_decay: float = 0.05
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float | None = None      # max global grad norm; None = no clipping
    # SimpleMAE
    mask_ratio: float = 0.95
    decoder_depth: int = 4              # the last k blocks see the decoding (mask) tokens
    norm_pix_loss: bool = False         # per-patch normalised pixel targets (VideoMAE option)
    # LayerLock / latent_nofreeze
    pixel_frac: float = 0.5             # pixel phase, as a fraction of steps
    freeze_end_frac: float = 0.9        # step of the last freeze, as a fraction of steps
    pixel_steps: int | None = None      # None -> round(pixel_frac * steps)
    freeze_interval: int | None = None  # None -> spread the freezes from pixel_steps to freeze_end
    freeze_jump: int = 1                # blocks frozen at each event (1 is best in the paper)
    max_frozen: float = 2 / 3           # <= 1: fraction of depth; > 1: a block count
    max_frozen_blocks: int | None = None  # derived (clamped to depth - decoder_depth - 1)
    freeze_target: str = "latent"       # latent (LayerLock) | pixel (progressive freezing only)
    latent_targets: str = "newest"      # newest | all_frozen
    latent_loss_on: str = "all"         # all | masked  (paper default: 100% of patches)
    latent_norm: bool = False           # layer-normalise latent targets (data2vec-style option)
    target_block: int | None = None     # latent_nofreeze: block whose output is the target
    rewarmup_steps: int | None = None   # None -> freeze_interval // 10 (>= 1)
    frozen_input: str = "visible"       # visible | reuse (see pretrain.model)
    # bookkeeping (do not change the trained weights)
    log_every: int = 50
    ckpt_every: int = 250
    probe_size: int = 8
    throttle_s: float = 0.0             # sleep per step; only for tests that kill a run mid-way


# fields that may differ between a saved state and a resumed run
BOOKKEEPING = ("log_every", "ckpt_every", "probe_size", "throttle_s")

# Per-size schedule scale. t: CPU-sized; the rest: paper-scale, shape of ViT-G.
PAPER_SHAPE = dict(pixel_frac=0.32, freeze_end_frac=0.94, decoder_depth=4, warmup_frac=0.02)
SIZE_RECIPES: dict[str, dict[str, Any]] = {
    "t": dict(steps=2400, batch_size=8, lr=1e-3, warmup_steps=120, pixel_frac=0.5, freeze_end_frac=0.9,
              decoder_depth=2, mask_ratio=0.75, log_every=25, ckpt_every=100),
    "s": dict(PAPER_SHAPE, steps=200_000, batch_size=256, lr=3e-4, log_every=100, ckpt_every=2000),
    "b": dict(PAPER_SHAPE, steps=200_000, batch_size=256, lr=3e-4, log_every=100, ckpt_every=2000),
    "l": dict(PAPER_SHAPE, steps=300_000, batch_size=512, lr=2e-4, log_every=100, ckpt_every=2000),
    "h": dict(PAPER_SHAPE, steps=400_000, batch_size=512, lr=1.5e-4, log_every=100, ckpt_every=2000),
    "g": dict(PAPER_SHAPE, steps=500_000, batch_size=1024, lr=1e-4, log_every=100, ckpt_every=2000),
    "e": dict(PAPER_SHAPE, steps=500_000, batch_size=1024, lr=1e-4, log_every=100, ckpt_every=2000),
}

_CHOICES = {"objective": OBJECTIVES, "freeze_target": ("latent", "pixel"),
            "latent_targets": ("newest", "all_frozen"), "latent_loss_on": ("all", "masked"),
            "frozen_input": ("visible", "reuse")}


def at_least(least: int) -> Rule:
    """An integer (not a bool) >= ``least``."""
    return (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= least, f"an integer >= {least}")


def fraction(below_one: bool = False) -> Rule:
    """A number in [0, 1] (``below_one``: [0, 1)) that float32, the dtype of training, holds."""
    ok = number(strict=False)[0]
    return (lambda v: ok(v) and (v < 1 if below_one else v <= 1),
            f"a number in [0, 1{')' if below_one else ']'} that float32 holds")


# train.<key> -> rule, checked before the schedule is derived; None (derived) is skipped. Floats are
# checked in float32: lr=1e39 is inf there and lr=1e-46 is 0, neither trains.
RULES: dict[str, Rule] = {
    **{k: at_least(1) for k in ("steps", "batch_size", "log_every", "ckpt_every", "probe_size")},
    **{k: at_least(0) for k in ("warmup_steps", "rewarmup_steps")},
    "lr": number(), "grad_clip": number(), "max_frozen": number(),
    "weight_decay": number(strict=False), "throttle_s": number(strict=False),
    **{k: fraction() for k in ("min_lr_ratio", "warmup_frac", "pixel_frac", "freeze_end_frac")},
    **{k: fraction(below_one=True) for k in ("beta1", "beta2")},
}


def check_values(recipe: Mapping[str, Any], rules: Mapping[str, Rule] = RULES) -> None:
    """ConfigError naming the first ``train.<key>`` of ``recipe`` whose value breaks its rule."""
    for key, (ok, allowed) in rules.items():
        value = recipe.get(key)
        if value is not None and not ok(value):
            raise ConfigError(f"train.{key}={value!r}: expected {allowed}")


def recipe_for(name: str) -> Recipe:
    """The un-resolved recipe of a zoo name (family -> objective, size -> schedule)."""
    model = resolve_model(name)
    if model.size is None:
        raise ConfigError(f"model {name!r} is not <family>_<size>; pretraining needs a zoo name")
    family, size = model.objective, model.size
    if family == "random":
        raise ConfigError(f"model {name!r} is an untrained baseline (seeded random init); nothing to pretrain")
    if family == "supervised":
        raise ConfigError(f"model {name!r} is the supervised control: its recipe is pretrain.supervised.DEFAULTS")
    return Recipe(objective=family, **SIZE_RECIPES[size])


def resolve_recipe(name: str, depth: int, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Recipe of ``name`` for an encoder of ``depth`` blocks, with ``overrides`` (None values
    ignored) applied and every derived field filled; returns a plain dict (the record)."""
    known = {f.name for f in fields(Recipe)}
    for key in overrides or {}:
        if key not in known:
            raise ConfigError(f"unknown recipe field train.{key}; known: {sorted(known)}")
    recipe = replace(recipe_for(name), **{k: v for k, v in (overrides or {}).items() if v is not None})
    for key, choices in _CHOICES.items():
        if getattr(recipe, key) not in choices:
            raise ConfigError(f"train.{key}={getattr(recipe, key)!r}: expected one of {choices}")
    check_values(asdict(recipe))
    if not 1 <= int(recipe.decoder_depth) < depth:
        raise ConfigError(f"train.decoder_depth={int(recipe.decoder_depth)} must be in [1, depth={depth})")
    if not 0.0 < float(recipe.mask_ratio) < 1.0:
        raise ConfigError("train.mask_ratio must be in (0, 1)")
    return asdict(replace(recipe, **asdict(resolve_schedule(recipe, depth))))


def resolve_schedule(recipe: Recipe, depth: int) -> Schedule:
    """The schedule of ``recipe`` for an encoder of ``depth`` blocks, its ``None`` fields derived
    from the recipe's fractions; ``recipe.decoder_depth`` must be in [1, depth)."""
    steps, encoder_depth = int(recipe.steps), depth - int(recipe.decoder_depth)
    wanted = int(recipe.max_frozen) if recipe.max_frozen > 1 else int(round(recipe.max_frozen * depth))
    most = max(1, min(wanted, encoder_depth - 1)) if encoder_depth >= 2 else 0  # one block keeps training
    pixel = default(recipe.pixel_steps, int(round(recipe.pixel_frac * steps)))
    interval = default(recipe.freeze_interval, spread_freezes(recipe, steps, pixel, most))
    schedule = Schedule(objective=recipe.objective, steps=recipe.steps, lr=recipe.lr,
                        warmup_steps=default(recipe.warmup_steps, max(1, round(recipe.warmup_frac * steps))),
                        min_lr_ratio=recipe.min_lr_ratio,
                        rewarmup_steps=default(recipe.rewarmup_steps, max(1, int(interval) // 10)),
                        pixel_steps=pixel, freeze_interval=interval, freeze_jump=recipe.freeze_jump,
                        max_frozen_blocks=most, freeze_target=recipe.freeze_target,
                        latent_targets=recipe.latent_targets,
                        target_block=default(recipe.target_block, max(0, most - 1)))
    schedule.check(depth, int(recipe.decoder_depth))
    return schedule


def default(value: Any, derived: Any) -> Any:
    """``value`` unless it is None (a recipe field left to be derived)."""
    return derived if value is None else value


def spread_freezes(recipe: Recipe, steps: int, pixel_steps: int, most: int) -> int:
    """The freeze interval that spreads the freezes from ``pixel_steps`` to ``freeze_end_frac`` of the run."""
    events = math.ceil(most / max(1, int(recipe.freeze_jump))) if most else 0
    span = int(round(recipe.freeze_end_frac * steps)) - pixel_steps
    return max(1, span // (events - 1)) if events > 1 else max(1, steps - pixel_steps)
