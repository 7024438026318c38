"""Pretrain one encoder: ``python -m pretrain.run model=layerlock_t`` (hydra; configs/pretrain.yaml).

Several processes: ``torchrun --nproc_per_node N -m pretrain.run model=...`` (DDP; gloo on CPU,
nccl on GPU). Re-running the same command resumes from ``<run_dir>/state.pt``. SIGTERM or Ctrl-C
finishes the step in flight, saves the state and exits with status 143 or 130.
"""
from __future__ import annotations

import os
import signal
import sys

import hydra
from hydra.errors import CompactHydraException
from omegaconf import DictConfig

from bench import CONFIG_DIR
from bench.errors import UserError
from bench.models.family import store_configs
from bench.registry import resolve_model
from pretrain.config import register_pretrain_schemas
from pretrain.supervised import SupervisedTrainer
from pretrain.train import Trainer

store_configs()
register_pretrain_schemas()  # pretrain.yaml extends schema/pretrain, the data/*.yaml files schema/data/<name>
EXIT = {"status": None, "signal": 0}


def load_config(overrides: list[str] | None = None) -> DictConfig:
    """The composed ``pretrain`` config with command-line style overrides (for tests and tools)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="pretrain", overrides=list(overrides or []))


def build_trainer(cfg: DictConfig) -> Trainer | SupervisedTrainer:
    """The trainer of ``model.name``'s family: the supervised control or self-supervised pretraining."""
    return SupervisedTrainer(cfg) if resolve_model(cfg.model.name).objective == "supervised" else Trainer(cfg)


@hydra.main(config_path="../bench/configs", config_name="pretrain", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Train; a user error (a bad value, an unreadable state, a diverged run, a full disk) is one line, exit 2."""
    try:
        trainer = build_trainer(cfg)
        try:
            EXIT["status"] = trainer.fit()
        finally:
            trainer.close()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    if EXIT["status"] == "stopped":
        EXIT["signal"] = int(trainer.stopped_by)
        print(f"{cfg.model.name}: stopped by {signal.Signals(trainer.stopped_by).name} at step {trainer.step}; state "
              f"saved to {trainer.state_path}; the same command resumes", file=sys.stderr)


def cli() -> None:
    """``main`` with hydra's config errors (an unknown key, a value of the wrong type) as one line,
    exit status 2, as ``bench.run.cli`` reports them; a run stopped by SIGTERM or Ctrl-C saves its state
    and exits 128 + the signal (143, 130)."""
    os.environ["HYDRA_FULL_ERROR"] = "1"  # hydra raises instead of printing its multi-line report
    try:
        main()
    except CompactHydraException as exc:
        from bench.run import hydra_error  # imported only here: bench.run registers every task on import

        print(f"error: {hydra_error(exc)}", file=sys.stderr)
        sys.exit(2)
    if EXIT["status"] == "stopped":
        sys.exit(128 + EXIT["signal"])


if __name__ == "__main__":
    cli()
