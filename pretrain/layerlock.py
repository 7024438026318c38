"""The LayerLock schedule: which blocks are frozen and what the network predicts at a step.

- ``mae``: pixels, nothing frozen, for the whole run.
- ``layerlock``: pixels for ``pixel_steps``; then at ``pixel_steps + i * freeze_interval`` the
  next ``freeze_jump`` blocks freeze (the patch embedding and learned positions freeze with
  block 0), until ``max_frozen_blocks``; after every freeze the target is the output of the
  newest frozen block (``latent_targets=newest``) or of every frozen block (``all_frozen``).
  ``freeze_target=pixel`` keeps the pixel loss (the paper's "progressive freezing" ablation,
  the accelerated MAE).
- ``latent_nofreeze``: the same pixel phase, then the output of ``target_block`` of the same,
  fully trainable network under stop-gradient (the collapse control).

A :class:`Phase` is a value: the trainer applies a new one (freeze, rebuild the optimizer,
re-wrap DDP) exactly when ``phase_at(step)`` changes.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Phase:
    frozen: int                 # blocks 0..frozen-1 (and the embedding when > 0) are frozen
    loss: str                   # "pixel" | "latent"
    targets: tuple[int, ...]    # blocks whose outputs are latent targets (empty for pixel)

    @property
    def target_block(self) -> int:
        """Newest latent target block, -1 for pixel prediction (for logs)."""
        return max(self.targets) if self.targets else -1

    def to_dict(self) -> dict:
        return {**asdict(self), "targets": list(self.targets)}

    @classmethod
    def from_dict(cls, d: dict) -> "Phase":
        return cls(frozen=int(d["frozen"]), loss=str(d["loss"]), targets=tuple(int(t) for t in d["targets"]))


PIXEL = Phase(0, "pixel", ())


def frozen_at(step: int, r: dict) -> int:
    """Number of frozen blocks at update ``step`` of a layerlock recipe."""
    if step < r["pixel_steps"]:
        return 0
    events = 1 + (step - r["pixel_steps"]) // r["freeze_interval"]
    return min(r["max_frozen_blocks"], events * r["freeze_jump"])


def phase_at(step: int, r: dict) -> Phase:
    if r["objective"] == "mae":
        return PIXEL
    if r["objective"] == "latent_nofreeze":
        return PIXEL if step < r["pixel_steps"] else Phase(0, "latent", (int(r["target_block"]),))
    n = frozen_at(step, r)
    if n == 0 or r["freeze_target"] == "pixel":
        return Phase(n, "pixel", ())
    targets = (n - 1,) if r["latent_targets"] == "newest" else tuple(range(n))
    return Phase(n, "latent", targets)


def freeze_steps(r: dict) -> list[int]:
    """Steps at which the frozen-block count grows (layerlock only)."""
    if r["objective"] != "layerlock":
        return []
    jump, most = r["freeze_jump"], r["max_frozen_blocks"]
    events = -(-most // jump)
    return [s for i in range(events) if (s := r["pixel_steps"] + i * r["freeze_interval"]) < r["steps"]]


def switch_steps(r: dict) -> list[int]:
    """Steps at which the latent target changes: each gets a learning-rate re-warmup."""
    if r["objective"] == "latent_nofreeze":
        return [r["pixel_steps"]] if r["pixel_steps"] < r["steps"] else []
    if r["objective"] == "layerlock" and r["freeze_target"] == "latent":
        return freeze_steps(r)
    return []


def phase_segments(r: dict) -> list[tuple[int, int, Phase]]:
    """The run as (start, end, phase) segments, in order; for FLOP accounting and plots."""
    bounds = sorted({0, r["steps"], *[s for s in freeze_steps(r) + switch_steps(r) if 0 < s < r["steps"]]})
    return [(a, b, phase_at(a, r)) for a, b in zip(bounds[:-1], bounds[1:])]
