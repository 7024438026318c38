"""Model zoo: ``<family>_<size>`` names -> architecture + checkpoint.

Sizes follow the 4DS / LayerLock ViTs (docs/design.md) plus the CPU size ``t``. Families:
``random`` (seeded untrained encoder, the lower bound), ``mae``, ``layerlock``,
``latent_nofreeze`` (trained by ``python -m pretrain.run``) and ``supervised`` (the positive
control, trained on the world's ground truth by ``python -m pretrain.supervised``). Every
family×size is a hydra node in group ``model``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import torch

from bench.models.checkpoint import checkpoint_path, load_checkpoint, named_sidecar
from bench.models.family import Model, ModelFamily
from bench.models.vit import ViTConfig, VideoViT
from bench.registry import MODELS

# width, depth, MLP width, heads
SIZES: dict[str, dict[str, int]] = {
    "t": dict(embed_dim=192, depth=8, mlp_dim=768, num_heads=3),
    "s": dict(embed_dim=384, depth=12, mlp_dim=1536, num_heads=6),
    "b": dict(embed_dim=768, depth=12, mlp_dim=3072, num_heads=12),
    "l": dict(embed_dim=1024, depth=24, mlp_dim=4096, num_heads=16),
    "h": dict(embed_dim=1280, depth=32, mlp_dim=5120, num_heads=16),
    "g": dict(embed_dim=1664, depth=48, mlp_dim=8192, num_heads=16),
    "e": dict(embed_dim=1792, depth=56, mlp_dim=15360, num_heads=16),
}
# CPU-sized models use small tubelets so a 64×64 clip still has an 8×8 token grid.
PATCH = {"t": (2, 8, 8)}
DEFAULT_PATCH = (2, 16, 16)
FAMILIES = ("random", "mae", "layerlock", "latent_nofreeze", "supervised")
REFERENCE_FAMILIES = ("random", "supervised")  # the untrained lower bound and the positive control
# LayerLock uses 3D RoPE (docs/design.md); its baselines keep learned positions.
FAMILY_POS_EMBED = {"layerlock": "rope"}


def random_encoder(cfg: ViTConfig, seed: int) -> tuple[VideoViT, dict[str, Any]]:
    """A ``VideoViT`` of ``cfg`` with weights drawn from ``seed``."""
    torch.manual_seed(seed)
    model = VideoViT(cfg).eval()
    return model, {"sha256": f"random-seed{seed}-{model.cfg.to_dict()}", "source": "random init"}


@MODELS.register()
class Zoo(ModelFamily):
    """``<family>_<size>``: ``random_<size>`` is built from the seed, every other name loads its
    checkpoint from ``paths.checkpoints``."""

    name = "zoo"
    order = 20

    def parse(self, name: str) -> Model | None:
        objective, _, size = name.rpartition("_")
        return Model(name, self, objective=objective, size=size) if objective in FAMILIES and size in SIZES else None

    def architecture(self, model: Model, overrides: dict[str, Any]) -> ViTConfig:
        cfg = dict(SIZES[model.size], patch_size=PATCH.get(model.size, DEFAULT_PATCH),
                   pos_embed=FAMILY_POS_EMBED.get(model.objective, "learned"))
        cfg.update({k: v for k, v in overrides.items() if v is not None})
        return ViTConfig(**cfg)

    def build(self, model: Model, checkpoints: Path, seed: int, weights: str | None,
              overrides: dict[str, Any]) -> tuple[VideoViT, dict[str, Any]]:
        overrides.pop("token_px", None)  # a frame models' option
        if model.objective == "random":
            return random_encoder(self.architecture(model, overrides), seed)
        self.sidecar(model, checkpoints)
        path = checkpoint_path(model.name, checkpoints)
        encoder, meta = load_checkpoint(path)
        return encoder, {**meta, "source": str(path)}

    def sidecar(self, model: Model, checkpoints: Path) -> dict[str, Any]:
        return named_sidecar(model.name, checkpoints, f"train it with `python -m pretrain.run model={model.name}`")

    def tubelet(self, model: Model, checkpoints: Path) -> tuple[int, int, int]:
        if model.objective == "random":
            return tuple(self.architecture(model, {}).patch_size)
        return ViTConfig(**self.sidecar(model, checkpoints)["architecture"]).patch_size

    def reference(self, model: Model) -> str | None:
        return model.objective if model.objective in REFERENCE_FAMILIES else None

    def untrained(self, model: Model) -> bool:
        return model.objective == "random"

    def random_row(self, model: Model) -> str:
        return f"random_{model.size}"

    def config_nodes(self) -> Iterator[tuple[str, str, dict[str, Any]]]:
        for objective in FAMILIES:
            for size in SIZES:
                yield "model", f"{objective}_{size}", {"name": f"{objective}_{size}"}
