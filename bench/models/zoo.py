"""Model zoo: ``<family>_<size>`` names -> architecture + checkpoint.

Sizes follow docs/design.md §4 (4DS / LayerLock ViTs) plus the CPU size ``t``. Families:
``random`` (seeded untrained encoder, the lower bound), ``mae``, ``layerlock``,
``latent_nofreeze`` (trained by ``python -m pretrain.run``), ``supervised`` (the positive control,
trained on the world's ground truth by ``python -m pretrain.supervised``), the references
``pixels`` (:mod:`bench.models.pixels`) and ``blind`` (no encoder: the task's input-blind answer),
any other name whose checkpoint ``<name>.safetensors`` lies in the checkpoint directory
(converted public models; a ``timm/1`` sidecar makes it a timm image ViT run frame by frame,
:mod:`bench.models.frames`), ``random_<checkpoint name>`` (that checkpoint's architecture with
seeded weights: its random twin), and ``timm/<arch>``: any timm image ViT run frame by frame.
``EXTERNAL_MODELS`` are real encoders the project can fetch (``make weights``); on a leaderboard
they and their twins are external references, not ranked with the models under study.
Every family×size, and the common timm ViTs (``TIMM_CONFIGS``), is also a hydra ConfigStore node in
group ``model``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import timm
import torch
from hydra.core.config_store import ConfigStore

from bench.errors import ConfigError
from bench.models.checkpoint import TIMM_FORMAT, CheckpointError, load_checkpoint, read_sidecar, timm_architecture
from bench.models.external import EXTERNAL
from bench.models.frames import build_frame_encoder
from bench.models.pixels import PixelConfig, PixelEncoder
from bench.models.vit import ViTConfig, VideoViT

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
# Reference rows of every leaderboard (docs/design.md §8): the task's input-blind answer, raw pixels
# with a position code, the untrained encoder and the encoder trained on the world's ground truth.
REFERENCE_MODELS = ("blind", "pixels")
REFERENCE_FAMILIES = ("random", "supervised")
# LayerLock uses 3D RoPE (docs/design.md §5); its baselines keep learned positions.
FAMILY_POS_EMBED = {"layerlock": "rope"}
# timm architectures with a ``model=timm/<arch>`` node: DINOv2 (with and without registers), DINOv3,
# SigLIP and the plain ViTs; ``model.name=timm/<arch>`` works for every other timm ViT.
TIMM_CONFIGS = ("vit_*_dinov2", "vit_*dinov3*", "vit_*_siglip_*", "vit_*_patch16_224")
EXTERNAL_MODELS = tuple(EXTERNAL)  # real encoders fetched by ``make weights`` (bench.models.external)
TWIN = "random_"  # random_<checkpoint>: the checkpoint's architecture, seeded weights


def parse_name(name: str) -> tuple[str, str] | None:
    """'layerlock_l' -> ('layerlock', 'l'); None if the name is not family_size."""
    family, _, size = name.rpartition("_")
    return (family, size) if family in FAMILIES and size in SIZES else None


def twin_of(name: str) -> str | None:
    """The checkpoint name whose random twin ``name`` is ('random_dinov2_s14_imgfocus' ->
    'dinov2_s14_imgfocus'); None for zoo names (``random_t``) and every other name."""
    return name.removeprefix(TWIN) if name.startswith(TWIN) and parse_name(name) is None else None


def reference_kind(name: str) -> str | None:
    """'blind' | 'pixels' | 'random' | 'supervised' | 'external' for a reference row's model name,
    else None; an external model's random twin is 'external' too."""
    if name in REFERENCE_MODELS:
        return name
    if name in EXTERNAL_MODELS or twin_of(name) in EXTERNAL_MODELS:
        return "external"
    parsed = parse_name(name)
    return parsed[0] if parsed and parsed[0] in REFERENCE_FAMILIES else None


def arch_for(name: str, **overrides: Any) -> ViTConfig:
    """Architecture of a zoo name (``overrides`` set e.g. img_size, num_frames, patch_size)."""
    parsed = parse_name(name)
    if parsed is None:
        raise ConfigError(f"model {name!r} is not <family>_<size> with family in {FAMILIES} and size in {list(SIZES)}")
    family, size = parsed
    cfg = dict(SIZES[size], patch_size=PATCH.get(size, DEFAULT_PATCH), pos_embed=FAMILY_POS_EMBED.get(family, "learned"))
    cfg.update({k: v for k, v in overrides.items() if v is not None})
    return ViTConfig(**cfg)


def checkpoint_path(name: str, checkpoints: str | Path) -> Path:
    return Path(checkpoints) / f"{name}.safetensors"


def tubelet_for(name: str, checkpoints: str | Path) -> tuple[int, int, int] | None:
    """The tubelet (t, h, w) a model cuts clips into, known without building it: from its sidecar
    for a checkpoint or its twin, from the zoo for ``random_<size>`` and ``pixels``; None for frame
    models (``timm/``, ``timm/1`` checkpoints), which resize frames."""
    if name.startswith("timm/") or name == "blind":
        return None
    if name == "pixels":
        return PATCH["t"]
    parsed = parse_name(name)
    if parsed and parsed[0] == "random":
        return tuple(arch_for(name).patch_size)
    meta = checkpoint_sidecar(twin_of(name) or name, checkpoints)
    return None if meta["format"] == TIMM_FORMAT else ViTConfig(**meta["architecture"]).patch_size


def checkpoint_sidecar(name: str, checkpoints: str | Path) -> dict[str, Any]:
    """The sidecar of checkpoint ``name``; a missing checkpoint is an error naming the path and the
    command that produces it."""
    path = checkpoint_path(name, checkpoints)
    if not path.exists():
        how = (f"train it with `python -m pretrain.run model={name}`" if parse_name(name)
               else "`make weights` fetches the external models" if name in EXTERNAL_MODELS
               else "convert one with `python -m bench.models.convert` or pass paths.checkpoints=DIR")
        raise CheckpointError(f"model {name!r}: checkpoint {path} not found; {how}")
    return read_sidecar(path)


def build_encoder(name: str, checkpoints: str | Path = "checkpoints", seed: int = 0, weights: str | None = None,
                  **overrides: Any) -> tuple[VideoViT, dict[str, Any]]:
    """Resolve a model name to (encoder in eval mode, metadata with 'sha256' and 'source').

    ``random_<size>`` and ``random_<checkpoint>`` are built from ``seed``; ``timm/<arch>`` from
    ``seed`` or the ``weights`` file; every other name needs a checkpoint, and a missing one is an
    error naming the path and the command that produces it. ``token_px`` sizes frame models' tokens
    (:func:`bench.models.frames.token_px`).
    """
    name = str(name)  # hydra parses model.name=1 or =inf as a number
    token_px = overrides.pop("token_px", None)
    frame_size = overrides.get("img_size") or 64
    if name.startswith("timm/"):
        return build_frame_encoder(name.removeprefix("timm/"), frame_size, seed, weights, token_px)
    if weights is not None:
        raise ConfigError(f"model.weights is for timm/<arch> models; {name!r} reads its weights from paths.checkpoints")
    if name == "pixels":
        model = PixelEncoder(PixelConfig(patch_size=tuple(overrides.get("patch_size") or PATCH["t"])))
        return model, {"sha256": f"pixels-{model.cfg.to_dict()}", "source": "raw tubelet pixels + position code"}
    if name == "blind":
        raise ConfigError("model 'blind' has no encoder: it is the task's input-blind answer (bench.run computes it)")
    parsed = parse_name(name)
    if parsed and parsed[0] == "random":
        return random_encoder(arch_for(name, **overrides), seed)
    real = twin_of(name) or name
    meta, path = checkpoint_sidecar(real, checkpoints), checkpoint_path(real, checkpoints)
    if meta["format"] == TIMM_FORMAT:
        arch, kwargs = timm_architecture(path, meta)
        return build_frame_encoder(arch, frame_size, seed, None if twin_of(name) else path, token_px, kwargs)
    if twin_of(name):
        given = {k: v for k, v in overrides.items() if v is not None}
        return random_encoder(ViTConfig(**{**meta["architecture"], **given}), seed)
    model, meta = load_checkpoint(path)
    return model, {**meta, "source": str(path)}


def random_encoder(cfg: ViTConfig, seed: int) -> tuple[VideoViT, dict[str, Any]]:
    """A ``VideoViT`` of ``cfg`` with weights drawn from ``seed``."""
    torch.manual_seed(seed)
    model = VideoViT(cfg).eval()
    return model, {"sha256": f"random-seed{seed}-{model.cfg.to_dict()}", "source": "random init"}


def register_configs() -> None:
    """Store a ``model`` group node per family×size and per common timm ViT (``model/timm/<arch>``,
    with a ``weights`` key) so ``model=<name>`` and ``model=timm/<arch>`` work in hydra."""
    cs = ConfigStore.instance()
    for arch in timm.list_models(list(TIMM_CONFIGS)):
        cs.store(group="model/timm", name=arch, node={"name": f"timm/{arch}", "weights": None})
    for name in (*REFERENCE_MODELS, *EXTERNAL_MODELS, *(TWIN + m for m in EXTERNAL_MODELS)):
        cs.store(group="model", name=name, node={"name": name})
    for family in FAMILIES:
        for size in SIZES:
            cs.store(group="model", name=f"{family}_{size}", node={"name": f"{family}_{size}"})
