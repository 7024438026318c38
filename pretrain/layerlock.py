"""LayerLock's schedule, all of it: at every update, which blocks are frozen, what the network
predicts and the learning rate.

The paper's shape (ViT-G, 48 blocks): pixel MAE for 160K steps, then one more block frozen every
10K steps until 32 of the 48 are frozen (2/3 of the depth). After each freeze the target becomes
the output of the newest frozen block, computed on the full unmasked clip without gradient, and
the learning rate re-warms up (+~1 SSv2 point in the paper). Frozen blocks run without autograd
and leave the optimizer: that is the compute saving.

Here positions are fractions of the run, so ``train.steps`` rescales the whole schedule (absolute
``pixel_steps`` / ``freeze_interval`` win when given); ``pretrain.recipes.resolve_schedule`` turns a
recipe into steps, and ``layerlock_g`` (500K steps, ``pixel_frac`` 0.32, ``freeze_end_frac`` 0.94,
``max_frozen`` 2/3) gives exactly 160K / 10K / 32.

- ``layerlock``: pixels for ``pixel_steps``; then at ``pixel_steps + i * freeze_interval`` the
  next ``freeze_jump`` blocks freeze (the patch embedding and learned positions freeze with
  block 0), until ``max_frozen_blocks`` (``max_frozen`` of the depth, capped so that one encoder
  block before the decoder keeps training); after every freeze the target is the output of the
  newest frozen block (``latent_targets=newest``) or of every frozen block (``all_frozen``), each
  through its own latent head. ``freeze_target=pixel`` keeps the pixel loss (the paper's
  "progressive freezing" ablation, the accelerated MAE).
- ``latent_nofreeze``: the same pixel phase, then the output of ``target_block`` of the same,
  fully trainable network under stop-gradient (the collapse control).
- ``mae``: pixels, nothing frozen, for the whole run.
- learning rate: linear warmup over ``warmup_steps``, cosine decay to ``min_lr_ratio`` of ``lr``,
  times a linear re-warmup over ``rewarmup_steps`` (default ``freeze_interval // 10``) from every
  target switch: it starts at ``1 / rewarmup_steps`` on the switch step.

Everything is a pure function of the step, so resuming needs only the step counter. A
:class:`Phase` is a value that says what trains; ``pretrain.model.PretrainModel.set_phase`` and
``pretrain.train.Trainer.enter_phase`` only apply it (``requires_grad``, a rebuilt optimizer, a
re-wrapped DDP), exactly when :meth:`Schedule.phase_at` changes.
"""
from __future__ import annotations

import bisect
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

from bench.errors import ConfigError
from bench.fit import cosine_with_warmup


@dataclass(frozen=True)
class Phase:
    frozen: int                 # blocks 0..frozen-1 (and the embedding when > 0) are frozen
    loss: str                   # "pixel" | "latent"
    targets: tuple[int, ...]    # blocks whose outputs are latent targets (empty for pixel)

    @property
    def target_block(self) -> int:
        """Newest latent target block, -1 for pixel prediction (for logs)."""
        return max(self.targets) if self.targets else -1

    @property
    def trains_embedding(self) -> bool:
        """The patch embedding and learned positions freeze with block 0."""
        return self.frozen == 0

    def trains_block(self, i: int) -> bool:
        return i >= self.frozen

    @property
    def trains_pixel_head(self) -> bool:
        return self.loss == "pixel"

    def trains_latent_head(self, block: int) -> bool:
        """The head predicting ``block``'s output trains while that block is a target."""
        return block in self.targets

    def to_dict(self) -> dict:
        return {**asdict(self), "targets": list(self.targets)}

    @classmethod
    def from_dict(cls, d: dict) -> "Phase":
        return cls(frozen=int(d["frozen"]), loss=str(d["loss"]), targets=tuple(int(t) for t in d["targets"]))


PIXEL = Phase(0, "pixel", ())


@dataclass(frozen=True)
class Schedule:
    """The resolved schedule of a run; field names are the recipe's (``pretrain.recipes.Recipe``)."""

    objective: str              # mae | layerlock | latent_nofreeze
    steps: int
    lr: float                   # peak learning rate
    warmup_steps: int
    min_lr_ratio: float         # cosine floor, as a fraction of lr
    rewarmup_steps: int         # linear ramp after every target switch
    pixel_steps: int            # pixel phase: updates 0 .. pixel_steps - 1
    freeze_interval: int        # steps between freezes
    freeze_jump: int            # blocks frozen at each freeze
    max_frozen_blocks: int
    freeze_target: str          # latent | pixel
    latent_targets: str         # newest | all_frozen
    target_block: int           # latent_nofreeze's target

    def check(self, depth: int, decoder_depth: int) -> None:
        """ConfigError naming the ``train.*`` key when the schedule cannot run on the encoder."""
        if self.objective == "layerlock" and self.max_frozen_blocks < 1:
            raise ConfigError(f"layerlock needs depth - decoder_depth >= 2 (depth={depth}, "
                              f"decoder_depth={decoder_depth})")
        if not 0 <= int(self.target_block) < depth - decoder_depth:
            raise ConfigError(f"train.target_block={self.target_block} must be an encoder block "
                              f"(< {depth - decoder_depth})")
        for key, least in (("pixel_steps", 0), ("freeze_interval", 1), ("freeze_jump", 0)):
            if getattr(self, key) < least:
                raise ConfigError(f"train.{key}={getattr(self, key)} must be >= {least}")

    @classmethod
    def from_recipe(cls, recipe: Mapping[str, Any]) -> "Schedule":
        """The schedule of a resolved recipe record (``pretrain.recipes.resolve_recipe``)."""
        return cls(**{f.name: recipe[f.name] for f in fields(cls)})

    # ------------------------------------------------------------------ phases
    def frozen_at(self, step: int) -> int:
        """Number of frozen blocks at update ``step`` of a layerlock run."""
        if step < self.pixel_steps:
            return 0
        events = 1 + (step - self.pixel_steps) // self.freeze_interval
        return min(self.max_frozen_blocks, events * self.freeze_jump)

    def phase_at(self, step: int) -> Phase:
        """What is frozen and predicted at update ``step``."""
        if self.objective == "mae":
            return PIXEL
        if self.objective == "latent_nofreeze":
            return PIXEL if step < self.pixel_steps else Phase(0, "latent", (int(self.target_block),))
        n = self.frozen_at(step)
        if n == 0 or self.freeze_target == "pixel":
            return Phase(n, "pixel", ())
        targets = (n - 1,) if self.latent_targets == "newest" else tuple(range(n))
        return Phase(n, "latent", targets)

    def freeze_steps(self) -> list[int]:
        """Steps at which the frozen-block count grows (layerlock only; none for ``freeze_jump=0``)."""
        if self.objective != "layerlock" or self.freeze_jump == 0:
            return []
        events = -(-self.max_frozen_blocks // self.freeze_jump)
        starts = (self.pixel_steps + i * self.freeze_interval for i in range(events))
        return [s for s in starts if s < self.steps]

    def switch_steps(self) -> list[int]:
        """Steps at which the latent target changes: each gets a learning-rate re-warmup."""
        if self.objective == "latent_nofreeze":
            return [self.pixel_steps] if self.pixel_steps < self.steps else []
        if self.objective == "layerlock" and self.freeze_target == "latent":
            return self.freeze_steps()
        return []

    def segments(self) -> list[tuple[int, int, Phase]]:
        """The run as (start, end, phase) segments, in order; for FLOP accounting and plots."""
        inner = [s for s in self.freeze_steps() + self.switch_steps() if 0 < s < self.steps]
        bounds = sorted({0, self.steps, *inner})
        return [(a, b, self.phase_at(a)) for a, b in zip(bounds[:-1], bounds[1:])]

    @property
    def latent_heads(self) -> int:
        """Latent prediction heads the model needs: one per block that is ever a target."""
        if self.objective == "layerlock" and self.freeze_target == "latent":
            return self.max_frozen_blocks
        if self.objective == "latent_nofreeze":
            return int(self.target_block) + 1
        return 0

    # ------------------------------------------------------------------ learning rate
    def rewarmup_factor(self, step: int) -> float:
        """Ramp after the latest target switch at or before ``step`` (1 when there is none)."""
        switches = self.switch_steps()
        i = bisect.bisect_right(switches, step)
        if i == 0 or self.rewarmup_steps <= 0:
            return 1.0
        return min(1.0, (step - switches[i - 1] + 1) / self.rewarmup_steps)

    def lr_at(self, step: int) -> float:
        """Learning rate of update ``step``."""
        f = cosine_with_warmup(step, self.steps, self.warmup_steps, self.min_lr_ratio)
        return self.lr * f * self.rewarmup_factor(step)
