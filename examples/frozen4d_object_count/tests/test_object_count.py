"""object_count keeps frozen4d's task contract (``bench.testing``: shapes, metrics and their
directions, a perfect prediction, per-clip values, closed-form targets, the config node), and
says what to set when the dataset does not give the number of classes."""
import pytest

from bench.errors import ConfigError
from bench.task import FeatureSpec
from bench.testing import check_task, world_clips
from frozen4d_object_count import ObjectCount


def test_object_count_keeps_the_task_contract():
    check_task(ObjectCount, world_clips())


def test_without_max_objects_it_says_which_key_to_set():
    spec = FeatureSpec(grid=(2, 4, 4), dim=16, clip=(4, 32, 32))
    with pytest.raises(ConfigError, match=r"^object_count: the dataset gives no 'max_objects' in its metadata; "
                                          r"set task.max_objects$"):
        ObjectCount(spec)
    assert ObjectCount(spec, max_objects=2).output_dim == 3
