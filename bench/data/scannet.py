"""ScanNet RGB-D sequences (as exported by ScanNet's SensReader) -> video, depth, intrinsics, poses.

Per scene ``<scenes_dir>/<scene>/``: ``color/<i>.jpg``, ``depth/<i>.png`` (16-bit, millimetres,
0 = no measurement), ``pose/<i>.txt`` (4×4 camera-to-world, OpenCV axes) and
``intrinsic/intrinsic_color.txt`` (4×4; the top-left 3×3 is K of the colour images). A split is a
text file listing scene names (ScanNet's ``scannetv2_train.txt`` / ``scannetv2_val.txt``).

Colour and depth frames are cropped with the same normalised centre crop and resized to the clip
resolution (depth with nearest neighbour, so no invalid 0 is blended into a valid depth), relying
on ScanNet's colour and depth cameras sharing their field of view. Frames whose pose is not finite
(ScanNet marks tracking failures with -inf) are left out before sampling (``skip_invalid_poses``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bench.data.video_io import (AdapterDataset, Item, check_dir, check_file, check_intrinsics, check_pose, fail,
                                 found, option_error, read_image)
from bench.registry import DATASETS


def read_matrix(path: Path, shape: tuple[int, int] = (4, 4)) -> np.ndarray:
    """A whitespace-separated matrix text file -> float64 array of ``shape``; clear errors."""
    check_file(path, "matrix file")
    try:
        values = np.array(path.read_text().split(), dtype=np.float64)
    except ValueError as exc:
        raise fail(path, f"not a matrix of numbers ({exc})") from None
    if values.size != shape[0] * shape[1]:
        raise fail(path, f"expected a {shape[0]}x{shape[1]} matrix ({shape[0] * shape[1]} numbers), found {values.size}")
    return values.reshape(shape)


def frame_stems(folder: Path, suffix: str) -> list[str]:
    """Frame names in ``folder`` sorted by their number (``0.jpg, 1.jpg, ..., 10.jpg``)."""
    stems = [p.stem for p in folder.iterdir() if p.suffix.lower() == suffix]
    try:
        return sorted(stems, key=int)
    except ValueError:
        bad = next(s for s in stems if not s.lstrip("-").isdigit())
        raise fail(folder / f"{bad}{suffix}", "frame file names must be frame numbers (0.jpg, 1.jpg, ...)") from None


def check_frame_counts(folder: Path, stems: list[str]) -> None:
    """Every colour frame of a scene has its depth PNG and its pose file."""
    for sub, suffix in (("depth", ".png"), ("pose", ".txt")):
        missing = sorted(set(stems) - set(frame_stems(folder / sub, suffix)), key=int)
        if missing:
            raise fail(folder / sub / f"{missing[0]}{suffix}", f"not found: color/ has {len(stems)} frames and "
                                                                f"{sub}/ lacks {len(missing)} of them")


@DATASETS.register("scannet")
class ScanNet(AdapterDataset):
    name = "scannet"
    version = 1
    provides = ("video", "depth", "intrinsics", "cam_to_world")

    def __init__(self, split: str, root: str | Path, data_dir: str | Path | None = None, *,
                 split_files: dict[str, str] | None = None, scenes_dir: str = "scans", depth_scale: float = 1000.0,
                 skip_invalid_poses: bool = True, **common: Any):
        split_files = split_files or {"train": "scannetv2_train.txt", "test": "scannetv2_val.txt"}
        if isinstance(depth_scale, bool) or not isinstance(depth_scale, (int, float)) or not 0 < depth_scale < np.inf:
            raise option_error("depth_scale", depth_scale, "a finite number > 0 (depth PNG units per metre)")
        super().__init__(split, root, data_dir, split_files=split_files, scenes_dir=scenes_dir,
                         depth_scale=float(depth_scale), skip_invalid_poses=bool(skip_invalid_poses), **common)

    def _setup(self) -> None:
        self.split_file = check_file(self.path(self.per_split(self.options["split_files"], "split_files")), "split file")
        self.scenes_dir = check_dir(self.path(self.options["scenes_dir"]), "scenes_dir")

    def _annotation_files(self) -> list[Path]:
        return [self.split_file]

    def _index(self) -> list[Item]:
        scenes = [ln.strip() for ln in self.split_file.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
        if not scenes:
            raise fail(self.split_file, "lists no scene")
        items = []
        for scene in scenes:
            folder = self.scenes_dir / scene
            what = f"scene {scene!r} (listed in {self.split_file.name})"
            if not found(folder, what) and self.missing(folder, what):
                continue
            check_dir(folder, what)
            parts = {sub: check_dir(folder / sub, f"{sub}/ folder of scene {scene!r}")
                     for sub in ("color", "depth", "pose", "intrinsic")}
            intrinsic = check_file(parts["intrinsic"] / "intrinsic_color.txt", "colour intrinsics")
            items.append(Item(scene, [parts["color"], parts["depth"], parts["pose"], intrinsic], {"folder": folder}))
        return items

    def _load(self, item: Item, clip_index: int) -> dict[str, Any]:
        folder: Path = item.info["folder"]
        stems = frame_stems(folder / "color", ".jpg")
        check_frame_counts(folder, stems)
        poses = {}
        for stem in stems:
            path = folder / "pose" / f"{stem}.txt"
            pose = read_matrix(path)
            if np.isfinite(pose).all():
                poses[stem] = check_pose(pose, path)
            elif not self.options["skip_invalid_poses"]:
                raise fail(path, "pose is not finite (set skip_invalid_poses=true)")
        stems = [s for s in stems if s in poses]
        if not stems:
            raise fail(folder, "scene has no frame with a valid pose")
        chosen = [stems[i] for i in self.indices(len(stems), clip_index, folder / "color")]
        k_path = folder / "intrinsic" / "intrinsic_color.txt"
        k_color = check_intrinsics(read_matrix(k_path)[:3, :3], k_path, "colour intrinsics")
        video, depth = [], []
        resize_rgb = resize_depth = None
        for stem in chosen:
            rgb = read_image(folder / "color" / f"{stem}.jpg")
            d = read_image(folder / "depth" / f"{stem}.png", depth16=True)
            resize_rgb = resize_rgb or self.resize_for(*rgb.shape[:2])
            resize_depth = resize_depth or self.resize_for(*d.shape)
            if rgb.shape[:2] != resize_rgb.src or d.shape != resize_depth.src:
                raise fail(folder / "color" / f"{stem}.jpg", f"frame size {rgb.shape[:2]} / depth {d.shape} differs from "
                                                              f"the scene's first frame {resize_rgb.src} / {resize_depth.src}")
            video.append(resize_rgb.image(rgb))
            depth.append(resize_depth.image(d, nearest=True).astype(np.float32) / self.options["depth_scale"])
        return {"video": np.stack(video).astype(np.uint8), "depth": np.stack(depth).astype(np.float32),
                "intrinsics": resize_rgb.intrinsics(k_color).astype(np.float32),
                "cam_to_world": np.stack([poses[s] for s in chosen]).astype(np.float32)}

