"""The pretraining loop: AdamW, cosine LR with warmup and re-warmups, LayerLock phases, exact
resume, DDP, metrics.

A run lives in ``run_dir`` (``outputs/pretrain/<name>/`` by default): ``state.pt`` (the full
training state, written atomically every ``ckpt_every`` steps, at the end and on SIGTERM),
``metrics.jsonl``, ``metrics.png`` and ``summary.json``. Starting a run whose ``state.pt``
exists resumes it exactly: model, optimizer (moments of trainable parameters only), phase
(frozen blocks), data position, mask generator and global RNG states, step, and every rank's
losses and step times since the last log record. The schedule (freezing, targets, learning rate:
``pretrain.layerlock.Schedule``) is a pure function of the step. On CPU in fp32 a resumed run
ends with the same weights, and logs the same ``metrics.jsonl`` lines (but for the wall-clock
``step_time``), as an uninterrupted one, bit for bit.

At the end, rank 0 exports the encoder to ``<paths.checkpoints>/<name>.safetensors`` with its
sidecar (``train_config`` = the resolved recipe) through ``bench.models.checkpoint``.
"""
from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from omegaconf import DictConfig, OmegaConf
from torch.nn.parallel import DistributedDataParallel

from bench.errors import ConfigError
from bench.models.checkpoint import checkpoint_path, save_checkpoint
from bench.models.vit import VideoViT, normalize_video
from bench.registry import resolve_model
from pretrain import distributed as D
from pretrain.collapse import collapse_metrics
from pretrain.data import BatchStream, open_videos
from pretrain.layerlock import Phase, Schedule
from pretrain.loop import TrainingLoop
from pretrain.masking import random_masking
from pretrain.metrics_log import MetricsLog, Window, plot_metrics, read_metrics, saved_window
from pretrain.model import PretrainModel, build_pretrain_model
from pretrain.optim import build_optimizer, set_lr
from pretrain.recipes import BOOKKEEPING, resolve_recipe
from pretrain.state import (atomic_torch_save, atomic_write, capture_rng, check_resumable, diverged, finite_weights,
                            load_state, restore_rng, writing)

STATE_VERSION = 1


def readout_role(block_input: int, depth: int, decoder_depth: int) -> dict[str, Any]:
    """Which block's output the benchmark's readout reads (the input of ``block_input``) and
    whether it is an encoder block or one of the last ``decoder_depth`` blocks that decoded
    during pretraining (4DS's 0.95 rule reads a decoder block for 12-block models with k = 4)."""
    role = "tokens" if block_input == 0 else ("encoder" if block_input <= depth - decoder_depth else "decoder")
    return {"input_of_block": block_input, "output_of_block": block_input - 1, "role": role}


def run_settings(recipe: dict[str, Any], arch: dict[str, Any]) -> dict[str, Any]:
    """What a resumed run must share with the saved one: the recipe but its bookkeeping, the architecture."""
    return {**{k: v for k, v in recipe.items() if k not in BOOKKEEPING}, **{f"arch.{k}": v for k, v in arch.items()}}


class Trainer(TrainingLoop):
    def __init__(self, cfg: DictConfig | dict[str, Any]):
        self.cfg = cfg = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
        self.dist, self.device = D.init_distributed(cfg.get("device", "auto"), cfg.get("ddp", {}).get("backend"))
        if cfg.get("threads"):
            torch.set_num_threads(int(cfg["threads"]))
        self.name = cfg["model"]["name"]
        self.run_dir = Path(cfg["run_dir"])
        self.seed = int(cfg.get("seed", 0))
        precision = cfg.get("precision", "auto")
        self.bf16 = precision == "bf16" or (precision == "auto" and self.device.type == "cuda")
        if self.bf16 and self.device.type != "cuda":
            raise ConfigError(f"precision={precision}: bf16 is only supported on CUDA (bf16 matmul is ~400x slower "
                              f"on our CPUs) and this run is on device={self.device}; use precision=fp32")

        random.seed(self.seed)
        np.random.seed(self.seed)
        torch.manual_seed(self.seed)
        videos = open_videos(cfg["data"], cfg["paths"]["cache"], "train")
        frames, height, width = videos.shape[1:4]
        if height != width:
            raise ConfigError(f"data.resolution={cfg['data'].get('resolution')!r} gives clips of {height}x{width}: "
                              "the ViT expects square frames; set data.resolution to one int")
        self.arch_overrides = {k: v for k, v in (cfg.get("arch") or {}).items() if v is not None}
        self.arch = resolve_model(self.name).architecture(img_size=height, num_frames=frames, **self.arch_overrides)
        self.recipe = resolve_recipe(self.name, self.arch.depth, cfg.get("train") or {})
        self.schedule = Schedule.from_recipe(self.recipe)
        torch.manual_seed(self.seed)
        model = build_pretrain_model(VideoViT(self.arch), self.recipe, self.schedule)
        self.model: PretrainModel = model.to(self.device)
        self.num_tokens = math.prod(self.model.encoder.grid_for(frames, height, width))
        self.stream = BatchStream(videos, self.recipe["batch_size"], self.seed, self.dist.rank, self.dist.world_size)
        self.mask_gen = torch.Generator().manual_seed(self.seed + 1)
        probe = torch.from_numpy(np.array(videos[:min(len(videos), self.recipe["probe_size"])]))  # copy: memmaps are read-only
        self.probe = normalize_video(probe).to(self.device)
        self.step, self.phase = 0, None
        self.lr = 0.0  # the learning rate of the last update
        self.window: Window = {}  # this rank's losses and step times since the last log record
        self.optimizer: torch.optim.Optimizer | None = None
        self.ddp: torch.nn.Module | None = None
        self.state_path = self.run_dir / "state.pt"
        self.resumed_from = None
        self.saved_step: int | None = None  # the step of the state this run last saved or resumed from
        if cfg.get("resume", True) and self.state_path.exists():
            self.load()
            self.resumed_from = self.step
        else:
            self.enter_phase(self.schedule.phase_at(0))
        self.log = MetricsLog(self.run_dir / "metrics.jsonl", self.resumed_from, enabled=self.dist.is_main)

    # ------------------------------------------------------------------ phases
    def enter_phase(self, phase: Phase) -> None:
        """Apply ``phase`` (from the schedule, or a saved state): freeze / unfreeze as it says, rebuild
        the optimizer over the trainable parameters (carrying their moments, dropping the frozen
        ones'), and re-wrap DDP."""
        self.model.set_phase(phase)
        self.optimizer = build_optimizer(self.model, self.recipe, previous=self.optimizer)
        if self.dist.enabled:
            self.ddp = None
            gc.collect()  # the old DDP reducer unhooks its autograd hooks when collected
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = DistributedDataParallel(
                self.model, device_ids=ids,
                find_unused_parameters=bool(self.cfg.get("ddp", {}).get("find_unused_parameters", False)))
        else:
            self.ddp = self.model
        self.phase = phase

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for group in self.optimizer.param_groups for p in group["params"]]

    # ------------------------------------------------------------------ one update
    def autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()

    def train_step(self) -> tuple[float, dict[str, float]]:
        """Run update ``self.step``; returns (local loss, nothing else to log: ``lr`` is kept for the record)."""
        phase = self.schedule.phase_at(self.step)
        if phase != self.phase:
            self.enter_phase(phase)
        self.lr = self.schedule.lr_at(self.step)
        set_lr(self.optimizer, self.lr)
        video = normalize_video(self.stream.next().to(self.device, non_blocking=True))
        keep, mask = random_masking(self.recipe["batch_size"], self.num_tokens, self.recipe["mask_ratio"],
                                    self.mask_gen)
        r, w = self.dist.rank, self.dist.world_size
        keep, mask = keep[r::w].to(self.device), mask[r::w].to(self.device)
        with self.autocast():
            loss = self.ddp(video, keep, mask, phase)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.recipe["grad_clip"]:
            torch.nn.utils.clip_grad_norm_(self.trainable_parameters(), self.recipe["grad_clip"])
        self.optimizer.step()
        self.step += 1
        return float(loss.detach()), {}

    # ------------------------------------------------------------------ loop hooks
    @property
    def is_main(self) -> bool:
        return self.dist.is_main

    def stop_agreed(self, requested: bool) -> bool:
        """Any rank's request stops every rank after the same update."""
        return D.all_reduce_max(requested, self.device) if self.dist.enabled else requested

    def postfix(self) -> dict[str, Any]:
        return {"frozen": self.phase.frozen}

    def log_window(self, index: int) -> None:
        """Log the window's mean loss (over ranks too) and step time at update ``index``; empty the window."""
        losses, times = self.window["loss"], self.window["step_time"]
        self.window = {}
        loss = sum(losses) / len(losses)
        if self.dist.enabled:
            loss = D.all_reduce_mean(loss, self.device)
        if not self.dist.is_main:
            return
        with self.autocast():
            probe = collapse_metrics(self.model.encoder, self.probe)
        self.log.write({"step": index, "loss": loss, "lr": self.lr, "frozen": self.phase.frozen,
                        "target_block": self.phase.target_block, "loss_kind": self.phase.loss, **probe,
                        "step_time": sum(times) / len(times)})

    # ------------------------------------------------------------------ state
    def metrics_windows(self) -> list[Window]:
        """Every rank's window, by rank (under DDP a collective: every rank calls it)."""
        if not self.dist.enabled:
            return [self.window]
        windows: list[Window] = [{}] * self.dist.world_size
        dist.all_gather_object(windows, self.window)
        return windows

    def state_dict(self) -> dict[str, Any]:
        """The full training state (under DDP every rank calls it: it gathers the ranks' windows)."""
        return {"version": STATE_VERSION, "name": self.name, "step": self.step,
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "phase": self.phase.to_dict(), "data": self.stream.state_dict(),
                "mask_rng": self.mask_gen.get_state(), "rng": capture_rng(), "recipe": self.recipe,
                "arch": self.arch.to_dict(), "world_size": self.dist.world_size,
                "metrics_window": self.metrics_windows()}

    def save(self) -> None:
        """Write the training state (under DDP a collective); weights that are no longer finite are
        never saved: the state on disk stays the last good one."""
        if not finite_weights(self.model):
            raise diverged(self.name, "the weights became non-finite", self.step - 1, self.recipe["lr"],
                           self.state_path, self.saved_step)
        state = self.state_dict()
        if self.dist.is_main:
            atomic_torch_save(state, self.state_path)
        if self.dist.enabled:
            dist.barrier()
        self.saved_step = self.step

    def load(self) -> None:
        state = load_state(self.state_path)
        check_resumable(self.state_path, state, self.name, STATE_VERSION,
                        run_settings(state.get("recipe", {}), state.get("arch", {})),
                        run_settings(self.recipe, self.arch.to_dict()))
        self.load_state_dict(state)
        self.saved_step = self.step

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` without checking it against this run's recipe (``load``
        checks; ``pretrain.convergence`` branches one run's state into other freezing schedules)."""
        self.model.load_state_dict(state["model"])
        self.enter_phase(Phase.from_dict(state["phase"]))
        self.optimizer.load_state_dict(state["optimizer"])
        self.stream.load_state_dict(state["data"])
        self.mask_gen.set_state(state["mask_rng"])
        restore_rng(state["rng"])
        self.step = int(state["step"])
        self.window = saved_window(state, self.state_path, self.dist.rank, self.dist.world_size)

    # ------------------------------------------------------------------ end of run
    def weights_digest(self) -> str:
        h = hashlib.sha256()
        for name, t in self.model.state_dict().items():
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        return h.hexdigest()

    def finish(self) -> dict[str, Any]:
        """Export the encoder checkpoint, the plot and a summary (rank 0)."""
        digest = self.weights_digest()
        digests = [digest]
        if self.dist.enabled:
            digests = [None] * self.dist.world_size
            dist.all_gather_object(digests, digest)
        if not self.dist.is_main:
            return {}
        records = read_metrics(self.log.path) if self.log.path.exists() else []
        plot_metrics(records, self.run_dir / "metrics.png", title=f"{self.name} ({self.recipe['objective']})")
        last = records[-1] if records else {}
        summary = {"name": self.name, "steps": self.step, "final_loss": last.get("loss"),
                   "feat_std": last.get("feat_std"), "eff_rank": last.get("eff_rank"),
                   "mean_step_time": (sum(r["step_time"] for r in records) / len(records)) if records else None,
                   "frozen": self.phase.frozen, "world_size": self.dist.world_size,
                   "rank_digests": digests, "ranks_consistent": len(set(digests)) == 1,
                   "device": str(self.device), "resumed_from": self.resumed_from}
        train_config = {"model": self.name, "recipe": self.recipe, "data": self.cfg["data"], "seed": self.seed,
                        "arch_overrides": self.arch_overrides, "world_size": self.dist.world_size,
                        "precision": "bf16" if self.bf16 else "fp32",
                        "readout_features": readout_role(self.model.encoder.readout_index, self.arch.depth,
                                                         self.recipe["decoder_depth"])}
        path = checkpoint_path(self.name, self.cfg["paths"]["checkpoints"])
        with writing(path, "checkpoint"):
            sha = save_checkpoint(self.model.encoder, path, train_config=train_config,
                                  extra={"pretrain": {k: summary[k] for k in ("steps", "final_loss", "feat_std",
                                                                              "eff_rank", "frozen")}})
        summary.update(checkpoint=str(path), sha256=sha)
        atomic_write(self.run_dir / "summary.json", json.dumps(summary, indent=2).encode(), "run summary")
        return summary

    def close(self) -> None:
        self.ddp = None
        D.shutdown()
