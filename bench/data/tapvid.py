"""TAP-Vid point tracks (DAVIS and Kinetics pickles, Doersch et al. 2022) -> video, query points,
target points, occlusion.

The public files are pickles, read here only through ``bench.data.safe_pickle`` (numpy arrays and
nothing else). ``tapvid_davis.pkl`` is a dict ``video name -> {'video': uint8 [T,H,W,3],
'points': float [N,T,2] (x, y) normalised to [0, 1], 'occluded': bool [N,T]}``; each
``tapvid_kinetics/*.pkl`` is a list of such dicts whose ``'video'`` holds one JPEG-encoded frame
(bytes) per time step.

Each clip keeps ``num_points`` tracks (the tracks visible in its sampled frames first, chosen by
a generator fixed by (seed, video); fewer tracks are padded with never-visible ones, which the
"first" query protocol leaves out). Points are scaled to pixels of the clip; a point that the
centre crop removes counts as occluded. ``query_points`` follow TAP-Vid's "first" sampling: each
track is queried at its first visible clip frame, as (t, y, x) pixels; a track never visible in
the clip gets (0, y, x) of frame 0 and is dropped by the point-tracking task.
"""
from __future__ import annotations

import glob
from pathlib import Path
from typing import Any

import numpy as np

from bench.errors import DatasetError
from bench.data.safe_pickle import safe_load
from bench.data.video_io import (AdapterDataset, Item, as_array, check_kind, check_range, check_values,
                                 check_video, decode_image, fail, positive_int)
from bench.registry import DATASETS


def _is_encoded(video: Any) -> bool:
    """True for a per-frame sequence of encoded images (TAP-Vid Kinetics), False for a uint8 array."""
    if isinstance(video, (list, tuple)):
        return True
    return isinstance(video, np.ndarray) and video.dtype == object


def _frame_count(path: Path, where: str, video: Any) -> int:
    """Frames of an entry's 'video': a list of encoded frames, or a checked uint8 array [T, H, W, 3]."""
    if _is_encoded(video):
        if len(video) == 0:
            raise fail(path, f"{where}: 'video' has no frames: expected one JPEG-encoded frame per time step")
        return len(video)
    if not isinstance(video, np.ndarray):
        raise fail(path, f"{where}: 'video' has type {type(video).__name__}: expected uint8 frames [T, H, W, 3] or a "
                         f"list of JPEG-encoded frames")
    return check_video(video, path, f"{where}: 'video'").shape[0]


@DATASETS.register("tapvid")
class TapVid(AdapterDataset):
    name = "tapvid"
    version = 1
    provides = ("video", "query_points", "target_points", "occluded", "track_object")

    def __init__(self, split: str, root: str | Path, data_dir: str | Path | None = None, *,
                 pickles: dict[str, Any] | None = None, num_points: int = 64, **common: Any):
        pickles = pickles or {"train": "tapvid_kinetics/*.pkl", "test": "tapvid_davis/tapvid_davis.pkl"}
        self._cached: tuple[Path, Any] | None = None  # the last pickle read (they hold GBs of video)
        super().__init__(split, root, data_dir, pickles=pickles, num_points=positive_int("num_points", num_points),
                         **common)

    def _setup(self) -> None:
        patterns = self.per_split(self.options["pickles"], "pickles")
        patterns = [patterns] if isinstance(patterns, str) else list(patterns)
        files: list[Path] = []
        for pattern in patterns:
            full = str(self.path(pattern))
            matched = sorted(glob.glob(full)) if glob.has_magic(full) else [full]
            if not matched:
                raise DatasetError(f"{full}: no TAP-Vid pickle matches this pattern")
            files += [Path(m) for m in matched]
        self.pickle_files = files

    def _annotation_files(self) -> list[Path]:
        return self.pickle_files

    def _read(self, path: Path) -> Any:
        if self._cached is None or self._cached[0] != path:
            self._cached = None
            self._cached = (path, safe_load(path))
        return self._cached[1]

    def _entries(self, path: Path) -> list[tuple[str, Any]]:
        """(key, entry) of every video in one pickle: dict (DAVIS) or list (Kinetics)."""
        data = self._read(path)
        if isinstance(data, dict):
            return [(str(k), v) for k, v in data.items()]
        if isinstance(data, (list, tuple)):
            return [(str(i), v) for i, v in enumerate(data)]
        raise fail(path, f"expected a dict (DAVIS) or a list (Kinetics) of videos, found {type(data).__name__}")

    def _index(self) -> list[Item]:
        items = []
        for path in self.pickle_files:
            for key, entry in self._entries(path):
                self._validate(path, key, entry)
                items.append(Item(f"{path.stem}/{key}", [], {"file": path, "key": key}))
        return items

    def _validate(self, path: Path, key: str, entry: Any) -> tuple[int, int]:
        """Check one video entry's fields, shapes, dtypes and values; return (frames, tracks).

        Points must be finite everywhere and within [0, 1] wherever they are visible (TAP-Vid marks a
        point that leaves the frame as occluded, and occluded positions are never scored)."""
        where = f"video {key!r}"
        if not isinstance(entry, dict):
            raise fail(path, f"{where}: expected a dict, found {type(entry).__name__}")
        missing = [f for f in ("video", "points", "occluded") if f not in entry]
        if missing:
            raise fail(path, f"{where}: missing field(s) {missing}")
        t = _frame_count(path, where, entry["video"])
        points = as_array(entry["points"], path, f"{where}: 'points'", f"floats [N, {t}, 2]")
        occ = as_array(entry["occluded"], path, f"{where}: 'occluded'", f"booleans [N, {t}]")
        if points.ndim != 3 or points.shape[1:] != (t, 2):
            raise fail(path, f"{where}: 'points' has shape {points.shape}, expected [N, {t}, 2] for {t} frames")
        if occ.shape != points.shape[:2]:
            raise fail(path, f"{where}: 'occluded' has shape {occ.shape}, expected {points.shape[:2]} (one flag per "
                             f"track of 'points' and frame of 'video')")
        check_kind(points, path, f"{where}: 'points'", "f", "floats in [0, 1]")
        occ = check_kind(occ, path, f"{where}: 'occluded'", "biu", "booleans (or integers 0/1)")
        check_values(occ, (occ == 0) | (occ == 1), path, f"{where}: 'occluded'", "0 or 1", ("track", "frame"))
        check_range(points, path, f"{where}: 'points'", 0.0, 1.0, ("track", "frame", ("x", "y")),
                    only=~occ.astype(bool)[..., None], note=" (normalised coordinates of a visible point)")
        return t, points.shape[0]

    def _frames(self, path: Path, key: str, video: Any, indices: np.ndarray) -> np.ndarray:
        if not _is_encoded(video):
            return np.asarray(video)[indices]
        frames = []
        for i in indices:
            data = video[int(i)]
            if not isinstance(data, (bytes, bytearray)):
                raise fail(path, f"video {key!r}: frame {int(i)} is {type(data).__name__}, expected JPEG bytes")
            frames.append(decode_image(bytes(data), f"{path} (video {key!r}, frame {int(i)})"))
        if len({f.shape for f in frames}) != 1:
            raise fail(path, f"video {key!r}: frames have different sizes {sorted({f.shape for f in frames})}")
        return np.stack(frames)

    def _load(self, item: Item, clip_index: int) -> dict[str, Any]:
        path, key = item.info["file"], item.info["key"]
        entry = dict(self._entries(path))[key]
        t, _ = self._validate(path, key, entry)
        idx = self.indices(t, clip_index, f"{path} (video {key!r})")
        frames = self._frames(path, key, entry["video"], idx)
        h, w = frames.shape[1:3]
        resize = self.resize_for(h, w)
        video = np.stack([resize.image(f) for f in frames]).astype(np.uint8)
        points = np.asarray(entry["points"], np.float64)[:, idx] * np.array([w, h])
        pts = resize.points(points)
        occ = np.asarray(entry["occluded"], bool)[:, idx] | ~resize.inside(pts)
        keep = self._choose_tracks(occ, item.key)
        n = self.options["num_points"]
        target = np.zeros((n, len(idx), 2), np.float32)
        occluded = np.ones((n, len(idx)), bool)
        target[:len(keep)], occluded[:len(keep)] = pts[keep], occ[keep]
        return {"video": video, "query_points": first_queries(target, occluded), "target_points": target,
                "occluded": occluded, "track_object": np.zeros(n, np.int32)}

    def _choose_tracks(self, occluded: np.ndarray, key: str) -> np.ndarray:
        """Indices of at most ``num_points`` tracks: visible ones first, then the others, each
        group in a seeded random order; returned sorted within each group."""
        n, rng = self.options["num_points"], self.rng(key)
        visible = np.flatnonzero(~occluded.all(1))
        hidden = np.flatnonzero(occluded.all(1))
        vis = np.sort(rng.permutation(visible)[:n])
        rest = np.sort(rng.permutation(hidden)[:max(0, n - len(vis))])
        return np.concatenate([vis, rest]).astype(np.int64)


def first_queries(target: np.ndarray, occluded: np.ndarray) -> np.ndarray:
    """TAP-Vid "first" queries: (t, y, x) of each track at its first visible frame [N, 3]
    (t = 0 and frame 0's position for a track that is never visible)."""
    t = np.argmax(~occluded, axis=1)  # 0 when never visible
    xy = target[np.arange(len(target)), t]
    return np.stack([t.astype(np.float32), xy[:, 1], xy[:, 0]], axis=1).astype(np.float32)
