"""Readout shapes, and the 4DS attentive readout's structure."""
import pytest
import torch

from bench.readouts import AttentiveReadout, LearnedQueries, LinearReadout, build_readout, project_once
from bench.task import FeatureSpec
from tasks.depth import Depth


def test_attentive_readout_shape_and_queries_are_independent():
    ro = AttentiveReadout(feature_dim=32, num_frames=4, queries=LearnedQueries(5, 16), output_dim=7,
                          dim=16, num_heads=4)
    feats = torch.randn(3, 4, 6, 32)
    out = ro(feats, {"features": feats})
    assert out.shape == (3, 5, 7)
    # queries do not attend to each other: changing one query leaves the others' outputs unchanged
    with torch.no_grad():
        ro.queries.query[0, 0] += 1.0
    out2 = ro(feats, {"features": feats})
    torch.testing.assert_close(out[:, 1:], out2[:, 1:])
    assert not torch.allclose(out[:, 0], out2[:, 0])


def test_learned_queries_init_std():
    q = LearnedQueries(4096, 64).query
    assert abs(q.std().item() - 0.02) < 0.001


def test_linear_readout_dense_and_pooled():
    feats = torch.randn(2, 4, 6, 32)
    assert LinearReadout(32, 5, pool=False)(feats, {}).shape == (2, 24, 5)
    assert LinearReadout(32, 5, pool=True)(feats, {}).shape == (2, 1, 5)


@pytest.mark.parametrize("kind", ["attentive", "linear"])
def test_build_readout_for_depth(kind):
    spec = FeatureSpec(grid=(2, 4, 4), dim=32, clip=(4, 16, 16))
    task = Depth(spec, readout=kind)
    ro = build_readout(kind, task, 32, num_heads=4)
    feats = torch.randn(2, 2, 16, 32)
    out = ro(feats, {"features": feats})
    assert task.decode(out, {})["depth"].shape == (2, 4, 16, 16)


def test_broadcast_queries_are_projected_once_with_the_same_values_and_gradients():
    torch.manual_seed(0)
    linear, query = torch.nn.Linear(8, 6), torch.randn(1, 5, 8, requires_grad=True)
    once = project_once(linear, query.expand(3, -1, -1))
    full = linear(query.expand(3, -1, -1).contiguous())
    torch.testing.assert_close(once, full)
    g_once = torch.autograd.grad(once.square().sum(), [query, linear.weight])
    g_full = torch.autograd.grad(linear(query.expand(3, -1, -1).contiguous()).square().sum(), [query, linear.weight])
    for a, b in zip(g_once, g_full):
        torch.testing.assert_close(a, b)
    x = torch.randn(3, 5, 8)  # a per-sample input goes through unchanged
    torch.testing.assert_close(project_once(linear, x), linear(x))
