"""The supervised control's correspondence objective (pretrain/correspondence.py) on hand-computed
cases: bilinear targets on token centres, sampling, and the loss of features that do and do not
follow the tracks."""
from __future__ import annotations

import math

import pytest
import torch

from pretrain.correspondence import bilinear_targets, chunk_tracks, correspondence_loss, sample_tokens

GRID, SIZE = (4, 4), (32, 32)  # 8-pixel tokens, centres at 4, 12, 20, 28


def test_bilinear_targets_split_a_position_between_the_nearest_token_centres():
    t = bilinear_targets(torch.tensor([[4.0, 4.0], [8.0, 4.0], [6.0, 12.0], [0.0, 31.9]]), GRID, SIZE)
    assert torch.allclose(t.sum(-1), torch.ones(4))
    assert t[0, 0] == 1  # on the centre of token (0, 0)
    assert t[1, 0] == t[1, 1] == 0.5  # halfway between tokens (0, 0) and (0, 1)
    assert t[2, 4] == 0.75 and t[2, 5] == 0.25  # a quarter of the way from (1, 0) to (1, 1)
    assert t[3, 12] == 1  # past the outer centres: clamped to the corner token (3, 0)


def test_sampling_at_a_token_centre_returns_that_tokens_feature():
    features = torch.randn(1, 2, 16, 5)
    xy = torch.tensor([[[[12.0, 4.0], [20.0, 28.0]]]])  # chunk 0: token (0, 1); chunk 1: token (3, 2)
    out = sample_tokens(features, xy, GRID, SIZE)
    assert torch.allclose(out[0, 0, 0], features[0, 0, 1]) and torch.allclose(out[0, 0, 1], features[0, 1, 14])


def test_chunk_tracks_take_each_chunks_first_frame_and_drop_points_outside_or_occluded():
    points = torch.tensor([[[[4.0, 4.0], [5.0, 5.0], [40.0, 4.0], [6.0, 6.0], [8.0, 8.0], [9.0, 9.0]]]])
    occluded = torch.tensor([[[False, False, False, False, True, False]]])
    xy, visible = chunk_tracks(points, occluded, 2, SIZE)
    assert xy.tolist() == [[[[4.0, 4.0], [40.0, 4.0], [8.0, 8.0]]]]
    assert visible.tolist() == [[[True, False, False]]]


def moving_identity(scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two chunks whose tokens are one-hot codes of the content, which moves one token right; a
    track on that content (from token 5 to token 6)."""
    first = torch.eye(16) * scale
    second = torch.roll(first, 1, dims=0)  # token i of chunk 1 shows what token i-1 showed
    features = torch.stack([first, second])[None]
    points = torch.tensor([[[[12.0, 12.0], [12.0, 12.0], [20.0, 12.0], [20.0, 12.0]]]])
    return features, points, torch.zeros(1, 1, 4, dtype=torch.bool)


def test_loss_of_features_that_follow_the_track_is_the_softmax_cross_entropy_by_hand():
    features, points, occluded = moving_identity(3.0)
    loss = correspondence_loss(features, points, occluded, GRID, (4, *SIZE), temperature=0.1)
    # cosine 1 with the true token, 0 with the 15 others: -log(e^10 / (e^10 + 15))
    assert loss.item() == pytest.approx(math.log(1 + 15 * math.exp(-10)), rel=1e-4)


def test_features_that_stay_put_cost_more_than_features_that_move_with_the_content():
    features, points, occluded = moving_identity(3.0)
    static = features[:, :1].expand(-1, 2, -1, -1)
    follows = correspondence_loss(features, points, occluded, GRID, (4, *SIZE))
    stays = correspondence_loss(static, points, occluded, GRID, (4, *SIZE))
    assert stays.item() == pytest.approx(10.0 + math.log(1 + 15 * math.exp(-10)), rel=1e-4)  # logit 0 vs one at 10
    assert follows < stays


def test_a_track_seen_in_one_chunk_only_gives_a_zero_loss_that_still_backpropagates():
    features, points, _ = moving_identity(1.0)
    features.requires_grad_(True)
    occluded = torch.tensor([[[False, False, True, True]]])
    loss = correspondence_loss(features, points, occluded, GRID, (4, *SIZE))
    loss.backward()
    assert loss.item() == 0 and features.grad is not None
