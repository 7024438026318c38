"""The ``supervised_<size>`` positive control: the ViT trained end-to-end on the world's ground
truth for every built-in task, then frozen and evaluated like any other encoder.

Each task gets its own head on the encoder's features at the readout depth — the benchmark's
``LinearReadout`` (per token for depth, at the query point or box for tracking) for the dense
tasks, its one-query attentive readout for pose and action, which a mean-pooled linear head
learns too slowly — and the encoder learns through all of them at once: the loss is the sum of
the tasks' own losses, each divided by its mean over the first ``scale_batches`` batches before
training (for the residual tasks, the "no change" answer's loss) so that no task's units dominate.
The training-free propagation tasks have no head: their ground truth, the world's tracks, trains
the features' own affinity (``pretrain.correspondence``), the one thing label propagation reads.
Linear dense heads are the cheap choice on a CPU and the demanding one: the features must hold
each answer where its token is. A benchmark on which this encoder does not beat the input-blind
and untrained references cannot see.

The CPU recipe (``DEFAULTS``): 4000 steps at batch 8, AdamW at 3e-4 after a 200-step warmup
(shorter, hotter runs collapse the features: docs/reproduction.md). The sidecar records the
collapse monitors (``pretrain.collapse``) of the exported encoder, so that a collapsed control shows.

``python -m pretrain.run model=supervised_t`` (same config tree as pretraining; ``train.steps``,
``train.batch_size``, ``train.lr``, ``train.weight_decay``, ``train.warmup_steps``,
``train.log_every``, ``train.ckpt_every`` apply). Resumes exactly from ``<run_dir>/state.pt``: the
same weights and the same ``metrics.jsonl`` as an uninterrupted run.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from bench.errors import ConfigError
from bench.fit import batches, optimizer
from bench.models.checkpoint import checkpoint_path, save_checkpoint
from bench.models.vit import VideoViT, normalize_video
from bench.readouts import build_readout
from bench.registry import DATASETS, TASKS, resolve_model
from bench.task import FeatureSpec, Task
from pretrain.collapse import collapse_metrics
from pretrain.correspondence import TEMPERATURE, correspondence_loss
from pretrain.loop import TrainingLoop
from pretrain.metrics_log import MetricsLog, Window, saved_window
from pretrain.recipes import RULES, at_least, check_values
from pretrain.state import (atomic_torch_save, atomic_write, check_resumable, diverged, finite_weights, load_state,
                            writing)

TASK_NAMES = ("depth", "point_tracking", "box_tracking", "camera_pose", "action")
# the recipe of the CPU size; every key can be set as train.<key>
HEADS = {"camera_pose": "attentive", "action": "attentive"}  # the other tasks: "linear"
HEAD_WIDTH, HEAD_HEADS = 64, 4  # the attentive heads' width and heads (the study readout's)
DEFAULTS = dict(steps=4000, batch_size=8, lr=3e-4, weight_decay=0.05, warmup_steps=200, log_every=100,
                ckpt_every=250, scale_batches=8)
STATE_VERSION = 2  # 2: the correspondence loss (its loss scale)
PROBE_CLIPS = 8  # train clips of the collapse monitors (as pretrain.recipes' probe_size)


def recipe(train: dict[str, Any]) -> dict[str, Any]:
    """DEFAULTS with the non-null ``train.*`` overrides; a pretraining-only key is an error."""
    given = {k: v for k, v in (train or {}).items() if v is not None}
    foreign = sorted(set(given) - set(DEFAULTS))
    if foreign:
        raise ConfigError(f"train.{foreign[0]} does not apply to supervised models (they take {sorted(DEFAULTS)})")
    merged = {**DEFAULTS, **given}
    check_values(merged, {**RULES, "scale_batches": at_least(1)})
    return merged


class SupervisedModel(nn.Module):
    """Encoder + one head per task (``HEADS``); ``forward`` returns each task's loss and, for the
    head-less propagation tasks, the ``correspondence`` loss of the features themselves."""

    def __init__(self, encoder: VideoViT, tasks: dict[str, Task], spec: FeatureSpec):
        super().__init__()
        self.encoder, self.tasks, self.spec = encoder, tasks, spec
        self.readouts = nn.ModuleDict({name: build_readout(task.readout, task, encoder.cfg.embed_dim,
                                                           num_heads=HEAD_HEADS, dim=HEAD_WIDTH)
                                       for name, task in tasks.items()})

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        batch = {**batch, "features": self.encoder(normalize_video(batch["features"]))}
        losses = {name: task.loss(self.readouts[name](batch["features"], batch), batch)
                  for name, task in self.tasks.items()}
        losses["correspondence"] = correspondence_loss(batch["features"], batch["target_points"], batch["occluded"],
                                                       self.spec.grid[1:], self.spec.clip)
        return losses


class SupervisedTrainer(TrainingLoop):
    """Train, checkpoint, resume and export the supervised control (the loop of ``pretrain.loop``)."""

    def __init__(self, cfg: DictConfig | dict[str, Any]):
        self.cfg = cfg = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
        if cfg.get("threads"):
            torch.set_num_threads(int(cfg["threads"]))
        self.name, self.seed = cfg["model"]["name"], int(cfg.get("seed", 0))
        self.recipe = recipe(cfg.get("train") or {})
        self.run_dir = Path(cfg["run_dir"])
        self.state_path = self.run_dir / "state.pt"
        data = dict(cfg["data"])
        dataset = DATASETS.get(data.pop("name"))(split="train", root=cfg["paths"]["cache"], **data)
        keys = sorted({k for name in TASK_NAMES for k in TASKS.get(name).requires})
        self.arrays = dataset.arrays(keys)
        self.videos = self.arrays.pop("video")
        frames, height, width = self.videos.shape[1:4]
        torch.manual_seed(self.seed)
        overrides = {k: v for k, v in (cfg.get("arch") or {}).items() if v is not None}
        encoder = VideoViT(resolve_model(self.name).architecture(img_size=height, num_frames=frames, **overrides))
        spec = FeatureSpec(grid=encoder.grid_for(frames, height, width), dim=encoder.cfg.embed_dim,
                           clip=(frames, height, width))
        tasks = {n: TASKS.get(n)(spec, readout=HEADS.get(n, "linear"), meta=getattr(dataset, "meta", None))
                 for n in TASK_NAMES}
        for task in tasks.values():
            task.prepare(self.arrays)
        self.model = SupervisedModel(encoder, tasks, spec)
        r = self.recipe
        self.opt, self.sched = optimizer(self.model, r["lr"], r["weight_decay"], r["steps"],
                                         warmup_frac=r["warmup_steps"] / r["steps"])
        self.step, self.scale = 0, {}
        self.saved_step: int | None = None  # the step of the state this run last saved or resumed from
        self.window: Window = {}  # the losses of the steps since the last log record
        resumed = cfg.get("resume", True) and self.state_path.exists()
        if resumed:
            self.load()
        else:
            self.scale = self.loss_scale()
        self.log = MetricsLog(self.run_dir / "metrics.jsonl", self.step if resumed else None)
        self.model.train()

    def batch_at(self, step: int) -> dict[str, torch.Tensor]:
        """The batch of update ``step``: epoch e visits the clips in a permutation seeded by (seed, e)."""
        size, n = self.recipe["batch_size"], len(self.videos)
        per_epoch = max(1, n // size)
        epoch, i = divmod(step, per_epoch)
        order = np.random.default_rng([self.seed, epoch]).permutation(n)[i * size:(i + 1) * size]
        return next(batches(self.videos, self.arrays, size, order))

    @torch.no_grad()
    def loss_scale(self) -> dict[str, float]:
        """1 / each task's mean loss over the first ``scale_batches`` batches of the run."""
        losses = [self.model(self.batch_at(i)) for i in range(self.recipe["scale_batches"])]
        return {k: 1.0 / max(float(np.mean([float(l[k]) for l in losses])), 1e-8) for k in losses[0]}

    def train_step(self) -> tuple[float, dict[str, float]]:
        """Run update ``self.step``; returns (the scaled total loss, each task's loss)."""
        losses = self.model(self.batch_at(self.step))
        total = sum(self.scale[k] * v for k, v in losses.items())
        self.opt.zero_grad(set_to_none=True)
        total.backward()
        self.opt.step()
        self.sched.step()
        self.step += 1
        return float(total.detach()), {k: float(v.detach()) for k, v in losses.items()}

    def log_window(self, index: int) -> None:
        self.log.write({"step": index, **{k: float(np.mean(v)) for k, v in self.window.items()}})
        self.window = {}

    def save(self) -> None:
        """Write the training state; weights that are no longer finite are never saved."""
        if not finite_weights(self.model):
            raise diverged(self.name, "the weights became non-finite", self.step - 1, self.recipe["lr"],
                           self.state_path, self.saved_step)
        atomic_torch_save({"version": STATE_VERSION, "name": self.name, "step": self.step, "recipe": self.recipe,
                           "model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                           "scheduler": self.sched.state_dict(), "scale": self.scale, "seed": self.seed,
                           "rng": torch.get_rng_state(), "metrics_window": [self.window]}, self.state_path)
        self.saved_step = self.step

    def load(self) -> None:
        state = load_state(self.state_path)
        check_resumable(self.state_path, state, self.name, STATE_VERSION,  # a state without a seed predates it
                        {**state.get("recipe", {}), "seed": state.get("seed", self.seed)},
                        {**self.recipe, "seed": self.seed})
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.scale, self.step = dict(state["scale"]), int(state["step"])
        torch.set_rng_state(state["rng"])
        self.window = saved_window(state, self.state_path)
        self.saved_step = self.step

    def finish(self) -> None:
        """Export the encoder (checkpoint + sidecar with the recipe and the collapse monitors of
        its readout-depth features, as the self-supervised runs record them) and a summary."""
        path = checkpoint_path(self.name, self.cfg["paths"]["checkpoints"])
        train_config = {"model": self.name, "objective": "supervised", "tasks": list(TASK_NAMES),
                        "correspondence": {"temperature": TEMPERATURE},
                        "recipe": self.recipe, "data": self.cfg["data"], "seed": self.seed,
                        "loss_scale": self.scale}
        probe = normalize_video(torch.from_numpy(np.array(self.videos[:PROBE_CLIPS])))
        monitors = {k: v for k, v in collapse_metrics(self.model.encoder, probe).items()
                    if k in ("feat_std", "eff_rank")}
        with writing(path, "checkpoint"):
            sha = save_checkpoint(self.model.encoder, path, train_config=train_config,
                                  extra={"pretrain": {"steps": self.step, **monitors}})
        summary = {"name": self.name, "steps": self.step, "checkpoint": str(path), "sha256": sha, **monitors}
        atomic_write(self.run_dir / "summary.json", json.dumps(summary, indent=2).encode(), "run summary")

    def close(self) -> None:
        """Nothing to release (single process); kept for the Trainer interface."""
