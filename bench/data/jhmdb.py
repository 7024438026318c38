"""JHMDB (Jhuang et al. 2013) joint positions -> video, 15 joint tracks and whether each joint is
in view, for ``keypoint_propagation`` (PCK, CRW / UVC protocol).

Layout (the JHMDB release; representations4d's RVM evaluation reads the same)::

    <data_dir>/splits/<action>_test_split<k>.txt                    "<video>.avi 1|2" (1 train, 2 test)
    <data_dir>/Rename_Images/<action>/<video>/00001.png …          frames
    <data_dir>/joint_positions/<action>/<video>/joint_positions.mat  'pos_img' [2, 15, T], MATLAB pixels

``joint_positions.mat`` is read with ``scipy.io.loadmat`` (MATLAB arrays; it never unpickles).
MATLAB pixel centres (1-based) become our continuous coordinates by −0.5 (pixel i spans [i, i+1));
a joint outside the cropped clip counts as occluded.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bench.errors import DatasetError
from bench.data.video_io import (AdapterDataset, Item, check_dir, check_file, check_finite, check_values,
                                 fail, found, positive_int, read_image)
from bench.registry import DATASETS

SPLIT_CODES = {"train": "1", "test": "2"}
NUM_JOINTS = 15  # JHMDB's puppet joints
# A joint may lie this many frame widths (heights) beyond the frame's left or right (top or bottom)
# border: the puppet is annotated past the image edge, but a joint further out is not a position in
# this video (a wrong unit or a corrupt file) and would overflow the float32 clip coordinates.
JOINT_MARGIN = 1.0


def read_joints(path: Path) -> np.ndarray:
    """'pos_img' of a joint_positions.mat as float64 [2, 15, T], checked finite. Joints may lie
    outside the frame (the puppet is annotated beyond the image border): those count as occluded."""
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    check_file(path, "joint file")
    try:
        pos = loadmat(str(path)).get("pos_img")
    except (MatReadError, ValueError, TypeError, OSError, NotImplementedError) as exc:
        raise fail(path, f"cannot read MATLAB file ({exc})") from None
    if pos is None:
        raise fail(path, "has no 'pos_img' array")
    pos = np.asarray(pos)
    if pos.ndim != 3 or pos.shape[:2] != (2, NUM_JOINTS):
        raise fail(path, f"'pos_img' has shape {pos.shape}, expected [2, {NUM_JOINTS}, frames]")
    return check_finite(pos, path, "'pos_img'", (("x", "y"), "joint", "frame")).astype(np.float64)


def check_joints_inside(pos: np.ndarray, path: Path, height: int, width: int) -> None:
    """Every joint of 'pos_img' [2, 15, T] (MATLAB pixels) within ``JOINT_MARGIN`` frames of the
    ``width`` x ``height`` frame; a joint just outside it is fine (occluded in the clip)."""
    size = np.array([width, height], np.float64)[:, None, None]
    lo, hi = -JOINT_MARGIN * size, (1 + JOINT_MARGIN) * size
    check_values(pos, (pos >= lo) & (pos <= hi), path, "'pos_img'",
                 f"a joint at most {JOINT_MARGIN:g} frame beyond the {width}x{height} frame ({lo[0, 0, 0]:g} <= x <= "
                 f"{hi[0, 0, 0]:g}, {lo[1, 0, 0]:g} <= y <= {hi[1, 0, 0]:g})", (("x", "y"), "joint", "frame"))


@DATASETS.register("jhmdb")
class JHMDB(AdapterDataset):
    name = "jhmdb"
    version = 1
    provides = ("video", "target_points", "occluded")

    def __init__(self, split: str, root: str | Path, data_dir: str | Path | None = None, *, split_number: int = 1,
                 splits_dir: str = "splits", frames_dir: str = "Rename_Images", joints_dir: str = "joint_positions",
                 **common: Any):
        super().__init__(split, root, data_dir, split_number=positive_int("split_number", split_number),
                         splits_dir=splits_dir, frames_dir=frames_dir, joints_dir=joints_dir, **common)

    def _setup(self) -> None:
        if self.split not in SPLIT_CODES:
            raise DatasetError(f"dataset 'jhmdb' has splits {list(SPLIT_CODES)}, not {self.split!r}")
        self.split_code = self.per_split(SPLIT_CODES, "split codes")
        pattern = f"*_test_split{self.options['split_number']}.txt"
        self.split_files = sorted(check_dir(self.path(self.options["splits_dir"]), "splits_dir").glob(pattern))
        if not self.split_files:
            raise fail(self.path(self.options["splits_dir"]), f"holds no split file {pattern}")

    def _annotation_files(self) -> list[Path]:
        return self.split_files

    def _index(self) -> list[Item]:
        items, suffix = [], f"_test_split{self.options['split_number']}"
        for split_file in self.split_files:
            action = split_file.stem[:-len(suffix)]
            for n, line in enumerate(split_file.read_text().splitlines(), 1):
                fields = line.split()
                if not fields:
                    continue
                if len(fields) != 2 or fields[1] not in SPLIT_CODES.values():
                    raise fail(split_file, f"line {n}: expected '<video>.avi 1|2', found {line.strip()!r}")
                if fields[1] == self.split_code:
                    items.extend(self._item(action, Path(fields[0]).stem))
        return items

    def _item(self, action: str, video: str) -> list[Item]:
        frames, what = self.path(self.options["frames_dir"]) / action / video, f"frames of video {action}/{video}"
        if not found(frames, what) and self.missing(frames, what):
            return []
        frames = check_dir(frames, what)
        joints = self.path(self.options["joints_dir"]) / action / video / "joint_positions.mat"
        return [Item(f"{action}/{video}", [frames, check_file(joints, "joint file")], {"frames": frames, "joints": joints})]

    def _load(self, item: Item, clip_index: int) -> dict[str, Any]:
        frames, joints = sorted(item.info["frames"].glob("*.png")), item.info["joints"]
        pos = read_joints(joints)
        if pos.shape[2] != len(frames):
            raise fail(joints, f"'pos_img' has {pos.shape[2]} frames, {item.info['frames']} holds {len(frames)} PNGs")
        idx = self.indices(len(frames), clip_index, item.info["frames"])
        images = [read_image(frames[int(i)]) for i in idx]
        if len({img.shape for img in images}) != 1:
            raise fail(item.info["frames"], f"frames have different sizes {sorted({img.shape for img in images})}")
        check_joints_inside(pos, joints, *images[0].shape[:2])
        resize = self.resize_for(*images[0].shape[:2])
        points = resize.points(pos.transpose(1, 2, 0)[:, idx] - 0.5)  # [J, T, 2] (x, y)
        return {"video": np.stack([resize.image(img) for img in images]).astype(np.uint8),
                "target_points": points.astype(np.float32), "occluded": ~resize.inside(points)}
