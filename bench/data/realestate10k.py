"""RealEstate10K camera trajectories (Zhou et al. 2018) + extracted frames -> video, intrinsics,
camera-to-world poses.

A sequence is ``<cameras dir>/<seq>.txt``: the YouTube URL on the first line, then one line per
frame: ``timestamp fx fy cx cy 0 0 r11 r12 r13 t1 r21 r22 r23 t2 r31 r32 r33 t3`` — timestamp in
microseconds, intrinsics normalised by the image width (fx, cx) and height (fy, cy), and the 3×4
world-to-camera matrix (OpenCV axes), row-major. Its frames are ``<frames dir>/<seq>/<timestamp>.png``
(or ``.jpg``), as the usual download scripts write them. Only frames present on disk are used (the
scripts often extract a subset); a sequence with no frame on disk is an error. ``cam_to_world`` is
the inverse of the file's world-to-camera matrix; the intrinsics are those of the clip's first
frame (RealEstate10K's are constant within a sequence), in pixels of the resized clip.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bench.errors import DatasetError
from bench.data.video_io import (AdapterDataset, Item, check_dir, check_file, check_finite, check_range,
                                 check_rotation, check_values, fail, found, read_image)
from bench.registry import DATASETS

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# the 18 numbers after a line's timestamp: normalised intrinsics, two unused zeros, then the 3x4 [R|t]
FIELDS = ("fx", "fy", "cx", "cy", "field 6", "field 7", "r11", "r12", "r13", "t1", "r21", "r22", "r23", "t2",
          "r31", "r32", "r33", "t3")


def parse_camera_file(path: Path) -> tuple[str, np.ndarray, np.ndarray, np.ndarray]:
    """(url, timestamps int64 [F], normalised intrinsics [F, 4] (fx, fy, cx, cy), world_to_camera [F, 4, 4])."""
    lines = [ln for ln in check_file(path, "camera file").read_text().splitlines() if ln.strip()]
    if not lines:
        raise fail(path, "camera file is empty")
    url, rows = lines[0].strip(), lines[1:]
    if not rows:
        raise fail(path, "camera file has a URL line but no frame lines")
    stamps, intr, w2c = [], [], []
    for n, line in enumerate(rows, start=2):
        fields = line.split()
        if len(fields) != 19:
            raise fail(path, f"line {n}: {len(fields)} fields, expected 19 (timestamp fx fy cx cy 0 0 + 12 of a 3x4 matrix)")
        try:
            stamp, values = int(fields[0]), np.array(fields[1:], dtype=np.float64)
        except ValueError:
            raise fail(path, f"line {n}: not a timestamp followed by 18 numbers") from None
        check_camera_values(path, f"line {n}", values)
        stamps.append(stamp)
        intr.append(values[:4])
        w2c.append(np.vstack([values[6:].reshape(3, 4), [0.0, 0.0, 0.0, 1.0]]))
    return url, np.array(stamps, np.int64), np.array(intr), np.array(w2c)


def check_camera_values(path: Path, where: str, values: np.ndarray) -> None:
    """One line's 18 numbers: finite, focal lengths > 0, principal point inside the image (normalised
    to [0, 1]), and a world-to-camera rotation."""
    check_finite(values, path, where, (FIELDS,))
    check_values(values[:2], values[:2] > 0, path, where, "a focal length > 0", (FIELDS[:2],))
    check_range(values[2:4], path, where, 0.0, 1.0, (FIELDS[2:4],), note=" (normalised principal point)")
    check_rotation(values[6:].reshape(3, 4)[:, :3], path, f"{where}: world-to-camera R")


@DATASETS.register("realestate10k")
class RealEstate10K(AdapterDataset):
    name = "realestate10k"
    version = 1
    provides = ("video", "intrinsics", "cam_to_world")

    def __init__(self, split: str, root: str | Path, data_dir: str | Path | None = None, *,
                 cameras: dict[str, str] | None = None, frames: dict[str, str] | None = None, **common: Any):
        cameras = cameras or {"train": "train", "test": "test"}
        frames = frames or {"train": "frames/train", "test": "frames/test"}
        super().__init__(split, root, data_dir, cameras=cameras, frames=frames, **common)

    def _setup(self) -> None:
        self.cameras_dir = check_dir(self.path(self.per_split(self.options["cameras"], "cameras")), "cameras directory")
        self.frames_dir = check_dir(self.path(self.per_split(self.options["frames"], "frames")), "frames directory")

    def _index(self) -> list[Item]:
        items = []
        for txt in sorted(self.cameras_dir.glob("*.txt")):
            folder = self.frames_dir / txt.stem
            what = f"frames folder of sequence {txt.stem!r}"
            if not found(folder, what) and self.missing(folder, what):
                continue
            check_dir(folder, what)
            items.append(Item(txt.stem, [txt, folder], {"txt": txt, "folder": folder}))
        if not items:
            raise DatasetError(f"{self.cameras_dir}: no RealEstate10K camera file (<sequence>.txt)")
        return items

    def _load(self, item: Item, clip_index: int) -> dict[str, Any]:
        txt, folder = item.info["txt"], item.info["folder"]
        _, stamps, intr, w2c = parse_camera_file(txt)
        on_disk = {p.stem: p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
        rows = [i for i, s in enumerate(stamps) if str(s) in on_disk]
        if not rows:
            raise fail(folder, f"no frame <timestamp>.png/.jpg for any of the {len(stamps)} timestamps of {txt.name}")
        rows = [rows[i] for i in self.indices(len(rows), clip_index, folder)]
        frames = [read_image(on_disk[str(stamps[r])]) for r in rows]
        sizes = {f.shape[:2] for f in frames}
        if len(sizes) != 1:
            raise fail(folder, f"frames have different sizes {sorted(sizes)}")
        h, w = frames[0].shape[:2]
        resize = self.resize_for(h, w)
        fx, fy, cx, cy = intr[rows[0]]
        k = np.array([[fx * w, 0.0, cx * w], [0.0, fy * h, cy * h], [0.0, 0.0, 1.0]])
        c2w = np.linalg.inv(w2c[rows])  # rigid (checked rotations): never singular
        return {"video": np.stack([resize.image(f) for f in frames]).astype(np.uint8),
                "intrinsics": resize.intrinsics(k).astype(np.float32), "cam_to_world": c2w.astype(np.float32)}
