"""Readout shapes, and the 4DS attentive readout's structure."""
import math

import pytest
import torch

from bench.readouts import (AttentiveReadout, LearnedQueries, LinearReadout, build_readout, cubic_resize_matrix,
                            cubic_time_resize, project_once)
from bench.task import FeatureSpec
from tasks.depth import Depth


def test_attentive_readout_shape_and_queries_are_independent():
    ro = AttentiveReadout(feature_dim=32, grid=(4, 2, 3), queries=LearnedQueries(5, 16), output_dim=7,
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


def _position_readout(protocol: str) -> AttentiveReadout:
    torch.manual_seed(0)
    return AttentiveReadout(feature_dim=32, grid=(2, 2, 2), queries=LearnedQueries(3, 16), output_dim=4, dim=16,
                            num_heads=4, protocol=protocol, frames=4)


def test_frozen4d_protocol_gives_tokens_their_spatial_position_and_4ds_does_not():
    """Identical features at every position: only a readout that adds (y, x) can tell them apart,
    so swapping two tokens' places changes its output and not the exact-4DS readout's."""
    feats = torch.randn(1, 2, 4, 32)
    swapped = feats[:, :, [1, 0, 2, 3]]
    ours, fourds = _position_readout("frozen4d"), _position_readout("4ds")
    assert not torch.allclose(ours(feats, {"features": feats}), ours(swapped, {"features": swapped}))
    torch.testing.assert_close(fourds(feats, {"features": feats}), fourds(swapped, {"features": swapped}))


def test_4ds_protocol_resizes_time_to_the_frame_count():
    ro = _position_readout("4ds")
    assert ro.time_embed.shape == (1, 4, 1, 32)  # one temporal embedding per frame, as 4DS
    assert _position_readout("frozen4d").time_embed.shape == (1, 2, 1, 32)
    with pytest.raises(ValueError, match="readout.protocol='jax'"):
        AttentiveReadout(32, (2, 2, 2), LearnedQueries(1, 16), 4, 16, 4, protocol="jax")


def test_cubic_resize_matches_hand_computed_keys_weights():
    """2 -> 4 samples, half-pixel centres: output 0 sits at -0.25 (weights k(0.25), k(1.25),
    renormalised), output 1 at 0.25 (k(0.25), k(0.75)); Keys a = -0.5."""
    def k(x):
        return 1.5 * x ** 3 - 2.5 * x ** 2 + 1 if x < 1 else -0.5 * x ** 3 + 2.5 * x ** 2 - 4 * x + 2
    w = cubic_resize_matrix(2, 4)
    first = torch.tensor([k(0.25), k(1.25)]) / (k(0.25) + k(1.25))
    second = torch.tensor([k(0.25), k(0.75)]) / (k(0.25) + k(0.75))
    torch.testing.assert_close(w[0], first)
    torch.testing.assert_close(w[1], second)
    torch.testing.assert_close(w[3], w[0].flip(0))
    torch.testing.assert_close(w.sum(1), torch.ones(4))
    const = torch.full((1, 8, 3, 2), 2.5)  # a constant signal stays constant, 8 -> 16
    torch.testing.assert_close(cubic_time_resize(const, 16), torch.full((1, 16, 3, 2), 2.5))
    ramp = torch.arange(4.0).view(1, 4, 1, 1)  # resizing to the same size is the identity
    torch.testing.assert_close(cubic_time_resize(ramp, 4), ramp)


def test_locality_bias_through_extra_channels_equals_the_explicit_gaussian_bias():
    """attend() folds −½·γ_h·‖p_q − p_n‖² into 4 extra q/k channels; the attention must equal SDPA
    with that bias as an additive mask (softmax ignores the per-query constant it adds)."""
    import torch.nn.functional as F

    spec = FeatureSpec(grid=(2, 4, 4), dim=32, clip=(4, 16, 16))
    task = Depth(spec)
    torch.manual_seed(0)
    ro = build_readout("attentive", task, 32, num_heads=4, dim=16)
    batch = {"features": torch.zeros(2, 2, 16, 32)}
    q, k, v = torch.randn(2, 4, 32, 4), torch.randn(2, 4, 32, 4), torch.randn(2, 4, 32, 4)
    delta = (ro.query_positions(batch)[:, :, None, :] - ro.token_pos) * ro.grid_scale
    bias = -0.5 * F.softplus(ro.locality)[None, :, None, None] * delta.square().sum(-1)[:, None]
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    torch.testing.assert_close(ro.attend(q, k, v, batch), expected, rtol=1e-4, atol=1e-5)
    assert torch.allclose(F.softplus(ro.locality), 1 / torch.logspace(math.log10(0.5), math.log10(8), 4) ** 2)
