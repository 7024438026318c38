"""Every 4DS task end to end through ``python -m bench.run`` on a tiny synthetic world, and a check
that the world's action labels need motion: a readout on one repeated frame scores near chance."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

TASKS = ["depth", "point_tracking", "box_tracking", "camera_pose", "action"]
TINY = ["data.train_size=16", "data.test_size=8", "data.num_frames=4", "data.resolution=32",
        "readout.epochs=1", "readout.batch_size=8"]
METRICS = {"depth": {"abs_rel", "delta1", "rmse"},
           "point_tracking": {"average_jaccard", "delta_avg", "occlusion_accuracy"},
           "box_tracking": {"mean_iou"},
           "camera_pose": {"rot_err_deg_median", "rot_err_deg_mean", "trans_err_median", "trans_err_mean",
                           "trans_dir_err_deg_median", "trans_dir_err_deg_mean", "auc30"},
           "action": {"top1", "top5"}}
PNG = {"depth": "depth.png", "point_tracking": "point_tracking.png", "box_tracking": "box_tracking.png",
       "camera_pose": "camera_pose.png", "action": "action_confusion.png"}


def run(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "bench.run", *TINY, f"paths.cache={tmp_path / 'cache'}",
            f"paths.results={tmp_path / 'results'}", f"paths.checkpoints={tmp_path / 'ckpt'}",
            f"hydra.run.dir={tmp_path / 'out'}", "model=random_t", *overrides]
    return subprocess.run(args, capture_output=True, text=True, timeout=600)


def check_record(tmp_path: Path, task: str, readout: str) -> dict:
    record = json.loads((tmp_path / "results" / f"{task}__synthetic__random_t__{readout}__seed0.json").read_text())
    assert record["task"] == task and record["readout"] == readout
    assert set(record["metrics"]) == METRICS[task] == set(record["directions"])
    assert record["primary_metric"] in record["metrics"]
    assert all(np.isfinite(v) for v in record["metrics"].values())
    return record


def test_smoke_one_task(tmp_path):
    proc = run(tmp_path, "task=camera_pose", "readout=linear", "visualize=true")
    assert proc.returncode == 0, proc.stderr
    check_record(tmp_path, "camera_pose", "linear")
    assert (tmp_path / "out" / "camera_pose.png").exists()


@pytest.mark.slow
@pytest.mark.parametrize("readout", ["attentive", "linear"])
@pytest.mark.parametrize("task", TASKS)
def test_every_task_writes_a_record(tmp_path, task, readout):
    proc = run(tmp_path, f"task={task}", f"readout={readout}", "visualize=true")
    assert proc.returncode == 0, proc.stderr
    check_record(tmp_path, task, readout)
    assert (tmp_path / "out" / PNG[task]).exists()
    if task == "action":
        table = json.loads((tmp_path / "out" / "action_per_class.json").read_text())
        assert len(table["label_names"]) > 1 and set(table["per_class_accuracy"]) == set(table["label_names"])


@pytest.mark.slow
@pytest.mark.parametrize("task", ["camera_pose", "action"])
def test_closed_form_solver_from_the_cli(tmp_path, task):
    proc = run(tmp_path, f"task={task}", "readout=linear", "readout.solver=closed_form", "visualize=false")
    assert proc.returncode == 0, proc.stderr
    assert check_record(tmp_path, task, "linear")["config"]["readout"]["solver"] == "closed_form"


def test_closed_form_solver_refuses_dense_and_query_tasks():
    from bench.fit import fit_closed_form
    from bench.readouts import build_readout
    from bench.registry import TASKS
    from bench.task import FeatureSpec

    spec = FeatureSpec(grid=(2, 4, 4), dim=16, clip=(4, 32, 32))
    for name in ("depth", "point_tracking", "box_tracking"):
        task = TASKS.get(name)(spec, readout="linear")
        with pytest.raises(ValueError, match="no closed-form linear fit"):
            fit_closed_form(build_readout("linear", task, 16), task, np.zeros((2, 2, 16, 16), np.float32), {})


SMALL_WORLD = dict(num_frames=8, resolution=32, num_points=4, max_objects=4, seed=0, train_size=96, test_size=48)


@pytest.fixture(scope="module")
def small_world(tmp_path_factory):
    """Train and test splits of a small world, their videos and labels, and the same videos with
    every frame replaced by the middle frame."""
    from bench.registry import DATASETS

    root = tmp_path_factory.mktemp("world")
    splits = [DATASETS.get("synthetic")(split=s, root=root, **SMALL_WORLD) for s in ("train", "test")]
    videos = [np.asarray(ds.arrays(["video"])["video"]) for ds in splits]
    mid = SMALL_WORLD["num_frames"] // 2
    single = [np.repeat(v[:, mid:mid + 1], v.shape[1], axis=1) for v in videos]
    labels = [np.asarray(ds.arrays(["label"])["label"]) for ds in splits]
    return {"real": videos, "single": single, "labels": labels, "meta": splits[0].meta}


def motion_energy(video: np.ndarray, cells: int = 4, halves: int = 2) -> np.ndarray:
    """Hand-made motion features: normal flow −I_t·∇I / |∇I|² averaged over a cells×cells grid and
    two halves of the clip (the brightness-constancy constraint; zero for a static clip)."""
    g = video.astype(np.float32).mean(-1) / 255.0
    it, mean = g[:, 1:] - g[:, :-1], (g[:, 1:] + g[:, :-1]) / 2
    ix, iy = np.gradient(mean, axis=3), np.gradient(mean, axis=2)
    n, t, h, w = it.shape

    def cell_mean(x):
        x = x[:, :t // halves * halves].reshape(n, halves, t // halves, cells, h // cells, cells, w // cells)
        return x.mean((2, 4, 6)).reshape(n, -1)

    energy = cell_mean(ix * ix + iy * iy) + 1e-4
    return np.concatenate([-cell_mean(it * ix) / energy, -cell_mean(it * iy) / energy], 1)


def logistic_top1(train_x, train_y, test_x, test_y) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train_x)
    clf = LogisticRegression(C=0.1, max_iter=3000).fit(scaler.transform(train_x), train_y)
    return float(clf.score(scaler.transform(test_x), test_y))


def test_action_labels_need_motion(small_world):
    """Positive and negative control of the world's action labels with the same linear classifier:
    motion features of real clips solve the task far above chance; on clips of one repeated frame
    there is no motion and no other cue, so it falls to chance (1/12)."""
    chance = 1 / len(small_world["meta"]["label_names"])
    (ytr, yte) = small_world["labels"]
    real = logistic_top1(motion_energy(small_world["real"][0]), ytr, motion_energy(small_world["real"][1]), yte)
    single = logistic_top1(motion_energy(small_world["single"][0]), ytr, motion_energy(small_world["single"][1]), yte)
    # measured 0.54 at this size (0.69 with 384 train clips); world v1 gave 0.875 here, before camera
    # pitch and roll varied, which turns the image-space direction of each labelled motion too
    assert real > 0.4, real
    assert single < chance + 0.1, (single, chance)


@pytest.mark.slow
def test_single_repeated_frame_random_encoder_is_at_chance(small_world):
    """The check with the harness itself: random_t features + the closed-form linear action readout
    on single-repeated-frame clips score near chance. (On real clips a random encoder's mean-pooled
    features are also near chance at this size; the motion control above shows the labels are learnable.)"""
    import torch

    from bench.features import extract
    from bench.fit import fit_closed_form, predict
    from bench.models import build_encoder
    from bench.readouts import build_readout
    from bench.task import FeatureSpec
    from tasks.action import Action

    frames, res = SMALL_WORLD["num_frames"], SMALL_WORLD["resolution"]
    model, _ = build_encoder("random_t", seed=0, img_size=res, num_frames=frames)
    grid = model.grid_for(frames, res, res)
    spec = FeatureSpec(grid=grid, dim=model.cfg.embed_dim, clip=(frames, res, res))
    torch.manual_seed(0)

    def features(video):
        out = np.zeros((len(video), grid[0], grid[1] * grid[2], spec.dim), np.float32)
        extract(model, video, [out], batch_size=16)
        return out

    task = Action(spec, readout="linear", meta=small_world["meta"])
    readout = build_readout("linear", task, spec.dim)
    train_x, test_x = (features(v) for v in small_world["single"])
    ytr, yte = small_world["labels"]
    fit_closed_form(readout, task, train_x, {"label": ytr})
    top1 = task.metrics(predict(readout, task, test_x, {"label": yte}, batch_size=32), {"label": yte})["top1"]
    assert top1 < 1 / task.num_classes + 0.1, top1
