"""The miniature study behind ``make demo``: pretrain MAE, LayerLock and the latent-without-freezing
control at CPU size, evaluate them and the untrained baseline on every task, build the leaderboard.

``python -m leaderboard.demo``          the full study (records -> leaderboard/results, tables -> leaderboard/)
``python -m leaderboard.demo --fast``   a smoke run of the same pipeline on a tiny world (CI, ~2 min),
                                        written under outputs/demo-fast so the committed leaderboard is untouched

Pretraining resumes (or is a no-op) when a run directory already holds the state, so a second
``make demo`` only re-evaluates. Evaluations run in this process through ``bench.run.evaluate``
with the same composed configs the CLI uses; every record carries its resolved config.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from hydra import compose, initialize_config_dir
from tqdm import tqdm

from bench.models.zoo import register_configs
from bench.run import evaluate
from bench.registry import TASKS
from leaderboard.build import publish
from pretrain.train import Trainer

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "configs")
PRETRAINED = ("mae_t", "layerlock_t", "latent_nofreeze_t")
MODELS = ("random_t", *PRETRAINED)
TASK_NAMES = ("depth", "point_tracking", "box_tracking", "camera_pose", "action")

# The study's readouts: the 4DS attentive readout at 96 wide (4 heads) for 5 epochs, so that
# 4 models x 5 tasks x 3 seeds fit a CPU budget; and a linear probe (seed 0), fitted in closed
# form where the task has one (ridge / logistic), else by SGD. Recorded in every result's config.
FULL = dict(seeds=(0, 1, 2), data=[], pretrain=[],
            readout=["readout.epochs=5", "readout.dim=96", "readout.num_heads=4"], linear=["readout.epochs=5"],
            results="leaderboard/results", out="leaderboard", work=".", readme="README.md")
TINY_DATA = ["data.train_size=16", "data.test_size=8", "data.num_frames=4", "data.resolution=32"]
FAST = dict(seeds=(0,), data=TINY_DATA, pretrain=["train.steps=6", "train.batch_size=2", "train.log_every=2"],
            readout=["readout.epochs=1", "readout.batch_size=8", "readout.dim=32", "readout.num_heads=2"],
            linear=["readout.epochs=1", "readout.batch_size=8"],
            results="outputs/demo-fast/results", out="outputs/demo-fast/leaderboard", work="outputs/demo-fast",
            readme=None)


def composed(config: str, overrides: list[str]):
    """A config composed exactly as the CLI would compose it."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name=config, overrides=overrides)


def pretrain(name: str, plan: dict) -> None:
    """Train ``name`` with its CPU recipe (resuming any earlier run) and export its checkpoint."""
    work = Path(plan["work"])
    cfg = composed("pretrain", [f"model={name}", *plan["data"], *plan["pretrain"],
                                f"paths.cache={work / 'cache'}", f"paths.checkpoints={work / 'checkpoints'}",
                                f"paths.runs={work / 'outputs' / 'pretrain'}"])
    trainer = Trainer(cfg)
    try:
        if trainer.fit() != "done":
            raise RuntimeError(f"pretraining {name} was stopped before the end; re-run to resume")
    finally:
        trainer.close()


def study(plan: dict) -> list[list[str]]:
    """The overrides of every evaluation: attentive x seeds, then the linear probe (seed 0)."""
    runs = []
    for model in MODELS:
        for task in TASK_NAMES:
            runs += [[f"model={model}", f"task={task}", f"seed={s}", *plan["readout"]] for s in plan["seeds"]]
            linear = ["readout.solver=closed_form"] if TASKS.get(task).closed_form else plan["linear"]
            runs.append([f"model={model}", f"task={task}", "seed=0", "readout=linear", *linear])
    return runs


def evaluate_all(plan: dict) -> None:
    """Every evaluation of the study; one result record each."""
    work = Path(plan["work"])
    for overrides in tqdm(study(plan), desc="evaluate", unit="run"):
        evaluate(composed("bench", [*overrides, "visualize=false", *plan["data"], f"paths.cache={work / 'cache'}",
                                    f"paths.checkpoints={work / 'checkpoints'}",
                                    f"paths.results={plan['results']}"]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m leaderboard.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--fast", action="store_true", help="tiny smoke run of the whole pipeline")
    args = parser.parse_args(argv)
    plan = FAST if args.fast else FULL
    TASKS.names()
    register_configs()
    start = time.time()
    for name in PRETRAINED:
        print(f"demo: pretraining {name}", flush=True)
        pretrain(name, plan)
    evaluate_all(plan)
    print(f"\ndemo: pretraining and {len(study(plan))} evaluations in {(time.time() - start) / 60:.1f} min")
    publish(plan["results"], plan["out"], plan["readme"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
