"""The pretraining model: a ``VideoViT`` plus SimpleMAE decoding tokens and prediction heads.

SimpleMAE (4DS): the encoder's first ``depth - k`` blocks see only the visible tubelets; learned
decoding (mask) tokens, carrying the positions of the masked tubelets, join them before the
last ``k`` blocks, which act as the decoder; a per-patch linear head maps tokens to pixels
(2×p×p×3 per tubelet) and the loss is L2 on the masked patches. The decoder blocks are the
encoder's own last blocks (the exported checkpoint is the whole ``VideoViT``).

Positions: with learned position embeddings, ``embed`` adds them to every token before the
visible ones are gathered; the mask tokens get the same table gathered at the masked ids.
With 3D RoPE, each token set gets ``rope_for(coords[ids])`` (per-sample [B, n, 3] coords).

LayerLock (``phase.frozen = F > 0``): the patch embedding and blocks ``0..F-1`` are frozen and
run under ``torch.no_grad``; the latent target is the output of block ``F-1`` computed on the
*full unmasked* clip under no_grad. ``frozen_input`` chooses what the trainable blocks see:

- ``visible`` (default): the frozen prefix is run forward-only on the visible tokens alone, as
  in SimpleMAE; the trainable suffix continues from there. Nothing about the masked tubelets
  reaches the trainable blocks except through the decoding tokens' positions.
- ``reuse``: the frozen prefix runs once on all tokens (it must anyway, for the target) and
  the visible subset of its output is fed onward. This saves the visible-only pass but the
  visible tokens have attended to the masked ones inside the frozen blocks, so the trainable
  part receives information about the masked content (and the frozen blocks see a token set
  they were never trained on). Kept as an option for comparison.

Latent prediction heads (our choice; the spec leaves it open): one fresh linear head
(dim -> dim) per target block, created at build time and first trained when its block becomes
a target. A fresh head per target avoids carrying a regression head fitted to block ``b`` into
the prediction of block ``b+1``; heads of past targets leave the optimizer with the blocks.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from torch import nn

from bench.errors import ConfigError
from bench.models.vit import VideoViT, grid_coords
from pretrain.layerlock import Phase, Schedule
from pretrain.masking import gather_tokens, patchify


class PretrainModel(nn.Module):
    def __init__(self, encoder: VideoViT, decoder_depth: int = 4, num_latent_heads: int = 0,
                 norm_pix_loss: bool = False, latent_loss_on: str = "all", latent_norm: bool = False,
                 frozen_input: str = "visible"):
        super().__init__()
        cfg = encoder.cfg
        if not 1 <= decoder_depth < cfg.depth:
            raise ConfigError(f"decoder_depth={decoder_depth} must be in [1, {cfg.depth})")
        self.encoder = encoder
        self.decoder_depth = decoder_depth
        self.norm_pix_loss = norm_pix_loss
        self.latent_loss_on = latent_loss_on
        self.latent_norm = latent_norm
        self.frozen_input = frozen_input
        dim = cfg.embed_dim
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        trunc_normal_(self.mask_token, std=0.02)
        self.pixel_head = nn.Linear(dim, math.prod(cfg.patch_size) * cfg.in_chans)
        self.latent_heads = nn.ModuleList(nn.Linear(dim, dim) for _ in range(num_latent_heads))
        for m in (self.pixel_head, *self.latent_heads):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)

    @property
    def encoder_depth(self) -> int:
        """Blocks that see only visible tokens (the rest are the decoder)."""
        return self.encoder.cfg.depth - self.decoder_depth

    # ------------------------------------------------------------------ trainable sets
    def trainable_modules(self, phase: Phase) -> dict[str, bool]:
        """{submodule / parameter name: trainable} for every unit, as ``phase`` says (the decoding
        tokens always train)."""
        enc = self.encoder
        units = {"encoder.patch_embed": phase.trains_embedding, "mask_token": True,
                 "pixel_head": phase.trains_pixel_head}
        if enc.pos_embed is not None:
            units["encoder.pos_embed"] = phase.trains_embedding
        for i in range(enc.cfg.depth):
            units[f"encoder.blocks.{i}"] = phase.trains_block(i)
        for b in range(len(self.latent_heads)):
            units[f"latent_heads.{b}"] = phase.trains_latent_head(b)
        return units

    def set_phase(self, phase: Phase) -> None:
        """``requires_grad`` per the phase; parameters that stop training also drop their grad."""
        if phase.frozen >= self.encoder_depth:
            raise ConfigError(f"cannot freeze {phase.frozen} blocks: the encoder has {self.encoder_depth} "
                              f"blocks before the {self.decoder_depth}-block decoder")
        if any(b >= len(self.latent_heads) for b in phase.targets):
            raise ConfigError(f"targets {phase.targets} need {max(phase.targets) + 1} latent heads, "
                              f"model has {len(self.latent_heads)}")
        units = self.trainable_modules(phase)
        for name, p in self.named_parameters():
            unit = next(u for u in units if name == u or name.startswith(u + "."))
            p.requires_grad_(units[unit])
            if not units[unit]:
                p.grad = None

    # ------------------------------------------------------------------ forward / loss
    def forward(self, video: torch.Tensor, ids_keep: torch.Tensor, ids_mask: torch.Tensor,
                phase: Phase) -> torch.Tensor:
        """Loss of one batch: ``video`` normalised [B,3,T,H,W], per-sample visible / masked ids.
        L2 per (prediction, target) pair, averaged over pairs (one pair per target block)."""
        pairs = self.predict(video, ids_keep, ids_mask, phase)
        return torch.stack([F.mse_loss(pred.float(), target.float()) for pred, target in pairs]).mean()

    def predict(self, video: torch.Tensor, ids_keep: torch.Tensor, ids_mask: torch.Tensor,
                phase: Phase) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(prediction, target) pairs: masked-patch pixels, or the latents of each target block."""
        enc = self.encoder
        depth, frozen = enc.cfg.depth, phase.frozen
        with torch.set_grad_enabled(torch.is_grad_enabled() and phase.trains_embedding):
            tokens, grid = enc.embed(video)
        coords = grid_coords(grid, video.device)
        batch, _, dim = tokens.shape
        latent = phase.loss == "latent"
        reuse = self.frozen_input == "reuse" and frozen > 0

        # no-grad pass over the full unmasked clip: latent targets (and the reused prefix)
        targets: dict[int, torch.Tensor] = {}
        prefix = None
        full_depth = max(max(phase.targets) + 1 if latent else 0, frozen if reuse else 0)
        if full_depth:
            with torch.no_grad():
                h = tokens.detach()
                rope = enc.rope_for(coords)
                for i in range(full_depth):
                    h = enc.blocks[i](h, rope)
                    if i in phase.targets:
                        targets[i] = h
                    if i == frozen - 1:
                        prefix = h

        # encoder on the visible tokens: frozen prefix without autograd, then trainable blocks
        rope_vis = enc.rope_for(coords[ids_keep])
        if reuse:
            vis = gather_tokens(prefix, ids_keep)
        else:
            vis = gather_tokens(tokens, ids_keep)
            if frozen:
                with torch.no_grad():
                    vis = enc.run_blocks(vis, 0, frozen, rope_vis)
        vis = enc.run_blocks(vis, frozen, self.encoder_depth, rope_vis)

        # decoder: mask tokens with positions join before the last k blocks
        mask_tok = self.mask_token.expand(batch, ids_mask.shape[1], dim)
        if enc.cfg.pos_embed != "rope":
            mask_tok = mask_tok + gather_tokens(enc.position_embedding(grid).expand(batch, -1, -1), ids_mask)
        ids_all = torch.cat([ids_keep, ids_mask], dim=1)
        h = torch.cat([vis, mask_tok.to(vis.dtype)], dim=1)
        h = enc.run_blocks(h, self.encoder_depth, depth, enc.rope_for(coords[ids_all]))
        n_vis = ids_keep.shape[1]

        if not latent:
            target = gather_tokens(patchify(video, enc.cfg.patch_size), ids_mask).float()
            if self.norm_pix_loss:
                mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
                target = (target - mean) / (var + 1e-6).sqrt()
            return [(self.pixel_head(h[:, n_vis:]), target)]

        out, ids = (h, ids_all) if self.latent_loss_on == "all" else (h[:, n_vis:], ids_mask)
        pairs = []
        for b in phase.targets:
            target = gather_tokens(targets[b], ids).float()
            if self.latent_norm:
                target = F.layer_norm(target, (dim,))
            pairs.append((self.latent_heads[b](out), target))
        return pairs


def build_pretrain_model(encoder: VideoViT, recipe: Mapping[str, Any], schedule: Schedule) -> PretrainModel:
    """The wrapper a resolved recipe asks for (latent heads only for blocks its ``schedule`` targets)."""
    return PretrainModel(encoder, decoder_depth=recipe["decoder_depth"], num_latent_heads=schedule.latent_heads,
                         norm_pix_loss=recipe["norm_pix_loss"], latent_loss_on=recipe["latent_loss_on"],
                         latent_norm=recipe["latent_norm"], frozen_input=recipe["frozen_input"])
