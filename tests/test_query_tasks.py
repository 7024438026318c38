"""The layout point and box tracking share (tasks._queries.QueryTrackingTask): query token (n, t')
sits at query n's place in chunk t' and predicts query n on the frames of chunk t'."""
import pytest
import torch

from bench.errors import ConfigError
from bench.task import FeatureSpec
from tasks.box_tracking import BoxTracking
from tasks.point_tracking import PointTracking

SPEC = FeatureSpec(grid=(2, 4, 4), dim=32, clip=(4, 32, 32))  # 2 time chunks of 2 frames


def point_batch():
    """Track 0 first visible at frame 1 at (x, y) = (8, 16) px; track 1 at frame 0 at (24, 4) px."""
    pts = torch.tensor([[[8.0, 16.0]] * 4, [[24.0, 4.0]] * 4])[None]
    occ = torch.tensor([[True, False, False, False], [False] * 4])[None]
    return {"features": torch.zeros(1, 2, 16, 32), "target_points": pts, "occluded": occ}


def box_batch():
    """First-frame boxes (0, 0, 16, 8) and (16, 16, 32, 24) px: centres (x, y) = (8, 4) and (24, 20)."""
    boxes = torch.tensor([[[0.0, 0, 16, 8]] * 4, [[16.0, 16, 32, 24]] * 4])[None]
    return {"features": torch.zeros(1, 2, 16, 32), "boxes": boxes, "box_valid": torch.ones(1, 2, 4, dtype=torch.bool)}


CASES = [(PointTracking, point_batch, [[0.5, 0.25], [0.125, 0.75]], 3),  # (y, x) of each query, outputs/frame
         (BoxTracking, box_batch, [[0.125, 0.25], [0.625, 0.75]], 4)]


@pytest.mark.parametrize("cls", [PointTracking, BoxTracking])
def test_frames_that_do_not_split_into_time_chunks_are_a_config_error(cls):
    with pytest.raises(ConfigError, match=f"^{cls.name}: 4 frames do not split into 3 feature time chunks$"):
        cls(FeatureSpec(grid=(3, 4, 4), dim=32, clip=(4, 32, 32)))


@pytest.mark.parametrize("cls, make_batch, place, _", CASES)
def test_query_tokens_sit_at_their_query_in_each_chunk_centre(cls, make_batch, place, _):
    pos = cls(SPEC).query_positions(make_batch())
    expected = [[t, *yx] for yx in place for t in (0.25, 0.75)]  # laid out (n t')
    torch.testing.assert_close(pos, torch.tensor([expected]))


@pytest.mark.parametrize("cls, make_batch, _, per_frame", CASES)
def test_each_token_predicts_its_query_on_its_chunks_frames(cls, make_batch, _, per_frame):
    task = cls(SPEC)
    assert task.output_dim == per_frame * 2
    out = torch.arange(2 * 2 * task.output_dim).reshape(1, 2 * 2, task.output_dim)
    frames = task.per_frame(out)
    assert frames.shape == (1, 2, 4, per_frame)
    for n in range(2):
        for c in range(2):
            for step in range(2):
                token = out[0, n * 2 + c].view(2, per_frame)  # token (n, c): frame after frame of its chunk
                assert frames[0, n, c * 2 + step].tolist() == token[step].tolist()
    assert task.queries(8)(make_batch()).shape == (1, 2 * 2, 8)
