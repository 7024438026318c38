"""The benchmark can see: on a tiny synthetic world, a readout trained on features that hold the
answer beats the task's input-blind reference by a wide margin. A change that blinds the harness
(features not reaching the queries, queries losing their place, a metric or decoding bug) fails
here, in ``make test``, before it reaches a leaderboard."""
import numpy as np
import pytest
import torch
from einops import rearrange

from bench.data.world import SyntheticWorld, WorldConfig
from bench.fit import fit, predict
from bench.readouts import build_readout
from bench.registry import TASKS
from bench.task import FeatureSpec
from tasks.camera_pose import pose_to_12, relative_pose


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    cfg = WorldConfig(train_size=64, test_size=16, num_frames=4, resolution=32, workers=1)
    root = tmp_path_factory.mktemp("world")
    return tuple(SyntheticWorld(cfg, split=s, root=root) for s in ("train", "test"))


def depth_oracle(ds) -> np.ndarray:
    """Each 2x8x8 tubelet's mean true log depth as its token's feature, as sin and cos at 8
    frequencies so that the readout's LayerNorm keeps it (a raw depth would lose its scale):
    [N, T', h*w, 16]."""
    depth = torch.from_numpy(np.array(ds.arrays(["depth"])["depth"])).clamp_min(0.1).log()
    mean = rearrange(depth, "n (t pt) (h ph) (w pw) -> n t (h w) (pt ph pw)", pt=2, ph=8, pw=8).mean(-1)
    angles = mean[..., None] * torch.linspace(0.5, 4.0, 8)
    return torch.cat([angles.sin(), angles.cos()], dim=-1).numpy()


def pose_oracle(ds) -> np.ndarray:
    """The clip's true relative pose (12 numbers) on every token, padded to 16 channels: [N, T', h*w, 16]."""
    pose = pose_to_12(relative_pose(np.asarray(ds.arrays(["cam_to_world"])["cam_to_world"])))
    feats = np.zeros((len(pose), 2, 16, 16), np.float32)
    feats[..., :12] = pose[:, None, None] * 10
    return feats


@pytest.mark.parametrize("name, oracle, epochs", [("depth", depth_oracle, 16), ("camera_pose", pose_oracle, 12)])
def test_features_that_hold_the_answer_beat_the_blind_reference(world, name, oracle, epochs):
    train, test = world
    task_cls = TASKS.get(name)
    train_f, test_f = oracle(train), oracle(test)
    spec = FeatureSpec(grid=(2, 4, 4), dim=train_f.shape[-1], clip=(4, 32, 32))
    task = task_cls(spec, meta=train.meta)
    keys = [k for k in task.requires if k != "video"]
    tr, te = train.arrays(keys), {k: np.asarray(v) for k, v in test.arrays(keys).items()}
    torch.manual_seed(0)
    readout = build_readout("attentive", task, spec.dim, num_heads=4, dim=32)
    fit(readout, task, train_f, tr, epochs=epochs, batch_size=8, lr=3e-3, weight_decay=0.0, seed=0)
    seen = task.metrics(predict(readout, task, test_f, te, batch_size=8), te)[task.primary_metric]
    task.prepare(tr)
    blind = task.metrics(task.blind(te), te)[task.primary_metric]
    assert seen < 0.75 * blind, f"{name}: a readout on features holding the answer scores {seen}, blind {blind}"
