"""Shared machinery of the real-dataset adapters: clear errors, video/image decoding, temporal
sampling, spatial crop + resize with the matching coordinate maps, and ``AdapterDataset``, the
base class that turns a per-clip loader into the dataset interface the harness uses.

Conventions (docs/design.md §3):
- every clip is ``num_frames`` frames sampled from its source (``sample_indices``) and cropped to
  the aspect ratio of ``resolution`` around the centre, then resized (``Resize``), so all clips of
  a split have the same shape and stack into one array per key;
- point and box coordinates are continuous pixel coordinates whose pixel ``i`` spans [i, i+1)
  (COCO boxes, TAP-Vid points); intrinsics are OpenCV matrices (pixel ``i`` is centred on ``i``),
  so resizing by ``s`` maps ``c -> (c + 0.5) * s - 0.5``;
- a problem with a file raises ``DatasetError`` (a ``ValueError``): one line that starts with the
  file's path and says what is wrong with it;
- adapters check every value they read before using it, through the ``check_*`` helpers below
  (finite numbers, ranges, dtypes, rotations, intrinsics): the message names the file, the entry,
  the first bad value and what is allowed. A bad option is ``data.<key>=<value>: expected ...``.
"""
from __future__ import annotations

import hashlib
import json
import numbers
import os
import re
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterable, Sequence, Union

import numpy as np
from torch.utils.data import Dataset

from bench.errors import DatasetError
from bench.staging import EntryWriter, NpyWriter, cached_entry

SHORT_CLIP_POLICIES = ("error", "loop", "pad")
CROP_MODES = ("center", "none")
# A video decoding fewer frames than its container declares, by more than this fraction, is
# reported as truncated (frame counts derived from a container's duration are estimates).
TRUNCATION_TOLERANCE = 0.1
ENTRY_META = "complete.json"  # the metadata file of a cache entry (``bench.staging.cached_entry``)


def fail(path: Any, problem: str) -> DatasetError:
    """``DatasetError('<path>: <problem>')`` with the problem squeezed onto one line."""
    return DatasetError(f"{path}: {one_line(problem)}")


def one_line(text: Any, limit: int = 300) -> str:
    """First non-empty line of ``text``, without decord's ``[hh:mm:ss] /src/file.cc:123:`` log prefixes."""
    text = re.sub(r"\[\d\d:\d\d:\d\d\] \S+?:\d+: ", "", str(text))
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    line = lines[0] if lines else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def denied(path: Any, what: str) -> DatasetError:
    """The error for a file or directory the operating system refuses to read."""
    return fail(path, f"{what} cannot be read (permission denied)")


def check_file(path: Path, what: str = "file") -> Path:
    """``path`` if it is a non-empty regular file this process may read, else a ``DatasetError``
    naming it (opened once here: decoders report an unreadable file as a corrupt one)."""
    path = Path(path)
    try:
        if not path.exists():
            raise fail(path, f"{what} not found")
        if not path.is_file():
            raise fail(path, f"{what} is not a regular file")
        if path.stat().st_size == 0:
            raise fail(path, f"{what} is empty (0 bytes)")
        with open(path, "rb"):
            pass
    except PermissionError:
        raise denied(path, what) from None
    return path


def check_dir(path: Path, what: str = "directory") -> Path:
    """``path`` if it is a directory this process may list and enter, else a ``DatasetError`` naming it."""
    path = Path(path)
    try:
        if not path.is_dir():
            raise fail(path, f"{what} not found" if not path.exists() else f"{what} is not a directory")
        with os.scandir(path):
            pass
    except PermissionError:
        raise denied(path, what) from None
    if not os.access(path, os.X_OK):  # listable but its entries cannot be opened
        raise denied(path, what)
    return path


def found(path: Path, what: str = "file") -> bool:
    """Whether ``path`` exists; a directory on the way that refuses the look-up is a ``DatasetError``
    naming ``path`` (``Path.exists`` raises ``PermissionError`` there)."""
    try:
        return Path(path).exists()
    except PermissionError:
        raise denied(path, what) from None


def load_json(path: Path) -> Any:
    """A JSON annotation file; empty, missing and malformed files are ``DatasetError``s naming it."""
    check_file(path, "annotation file")
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise fail(path, f"not valid JSON ({exc})") from None


# ----------------------------------------------------------------------------------------------
# checking what a file holds and what the options say: one line naming the file (or option), the
# entry, the bad value and what is allowed

# A pose's rotation R passes when every entry of R^T R - I is within this (poses are stored with six
# or more digits, so a real rotation is orthonormal to about 1e-6) and det R > 0.
ROTATION_TOLERANCE = 1e-3

Axis = Union[str, Sequence[str]]  # an axis name ("frame" -> "frame 3") or its labels (("x", "y") -> "y")

# ``{split: [lo, hi]}`` or null, checked by ``AdapterDataset._partition_bounds``. ``Any`` leaves its
# config node untyped: OmegaConf 2.3 cannot merge a command-line dict (``data.partition={train: [0, 0.5]}``)
# into a typed dict node that holds null, the YAML default (AttributeError: 'NoneType' ... 'get').
Partition = Any
PARTITION_FORM = "{split: [lo, hi], ...} of fractions of the sorted videos, e.g. {train: [0, 0.5], test: [0.5, 1]}"


def option_error(name: str, value: Any, allowed: str) -> DatasetError:
    """``DatasetError('data.<name>=<value>: expected <allowed>')``: a bad adapter option."""
    return DatasetError(f"data.{name}={value!r}: expected {allowed}")


def positive_int(name: str, value: Any, optional: bool = False) -> int | None:
    """An integer option that must be >= 1 (or null when ``optional``); bools, floats and strings are refused."""
    if value is None and optional:
        return None
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 1:
        return int(value)
    raise option_error(name, value, "an integer >= 1" + (" or null" if optional else ""))


def _located(what: str, index: tuple[int, ...], axes: Sequence[Axis]) -> str:
    """``what`` and one element's position: ``'points' at track 1, frame 3, x`` along ``axes``, else
    ``'points'[1, 3, 0]``."""
    if not index:
        return what
    if not axes:
        return f"{what}[{', '.join(map(str, index))}]"
    return f"{what} at " + ", ".join(f"{axis} {i}" if isinstance(axis, str) else str(axis[i])
                                     for axis, i in zip(axes, index))


def _shown(value: Any) -> str:
    if not isinstance(value, (float, np.floating)):
        return str(value)
    return f"{value:g}" if np.isfinite(value) else f"non-finite ({value:g})"


def check_values(array: Any, ok: Any, source: Any, what: str, allowed: str, axes: Sequence[Axis] = ()) -> np.ndarray:
    """``array`` as a numpy array if ``ok`` (bool, broadcast to its shape) holds everywhere, else a
    ``DatasetError`` naming ``source``, the first element where it does not, its value and ``allowed``."""
    array = np.asarray(array)
    bad = ~np.broadcast_to(np.asarray(ok, bool), array.shape)
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        more = f" ({int(bad.sum())} such values)" if bad.sum() > 1 else ""
        raise fail(source, f"{_located(what, index, axes)} is {_shown(array[index])}: expected {allowed}{more}")
    return array


def _is_fraction(x: Any) -> bool:
    """A real number in [0, 1] (bools and NaN are not)."""
    return isinstance(x, numbers.Real) and not isinstance(x, (bool, np.bool_)) and 0.0 <= x <= 1.0


def as_array(value: Any, source: Any, what: str, expected: str) -> np.ndarray:
    """``value`` as a numpy array; nested lists whose rows differ in length are a ``DatasetError``
    naming ``source`` and ``what`` (numpy refuses them with a bare ``ValueError``)."""
    try:
        return np.asarray(value)
    except ValueError:
        raise fail(source, f"{what} is a ragged nested list (rows of different lengths): expected {expected}") from None


def check_kind(array: Any, source: Any, what: str, kinds: str, expected: str) -> np.ndarray:
    """``array`` as a numpy array whose dtype kind is in ``kinds`` ('b' bool, 'i'/'u' integers, 'f' floats)."""
    array = np.asarray(array)
    if array.dtype.kind not in kinds:
        raise fail(source, f"{what} has dtype {array.dtype}: expected {expected}")
    return array


def check_finite(array: Any, source: Any, what: str, axes: Sequence[Axis] = ()) -> np.ndarray:
    """``array`` as a numpy array of numbers, none of them NaN or infinite."""
    array = check_kind(array, source, what, "iuf", "numbers")
    return check_values(array, np.isfinite(array), source, what, "a finite number", axes)


def check_range(array: Any, source: Any, what: str, lo: float, hi: float, axes: Sequence[Axis] = (),
                only: Any = None, note: str = "") -> np.ndarray:
    """``array`` finite everywhere, with ``lo <= value <= hi`` everywhere or, given the mask ``only``,
    wherever it is True."""
    array = check_finite(array, source, what, axes)
    ok = (array >= lo) & (array <= hi)
    return check_values(array, ok if only is None else ok | ~np.asarray(only, bool), source, what,
                        f"a value in [{lo:g}, {hi:g}]{note}", axes)


def check_video(array: Any, source: Any, what: str = "'video'") -> np.ndarray:
    """Decoded RGB frames: uint8 [T, H, W, 3] with T, H, W >= 1 (a float video is refused, not cast)."""
    array = np.asarray(array)
    if array.ndim != 4 or array.shape[-1] != 3 or 0 in array.shape:
        raise fail(source, f"{what} has shape {array.shape}, expected [T, H, W, 3]")
    if array.dtype != np.uint8:
        raise fail(source, f"{what} has dtype {array.dtype}: expected uint8 RGB values 0-255")
    return array


def check_rotation(rotation: Any, source: Any, what: str, tol: float = ROTATION_TOLERANCE) -> np.ndarray:
    """A finite 3x3 rotation: R^T R = I within ``tol`` and det R > 0 (no reflection)."""
    r = check_finite(rotation, source, what)
    error, det = float(np.abs(r.T @ r - np.eye(3)).max()), float(np.linalg.det(r))
    if error > tol or det <= 0:
        raise fail(source, f"{what} is not a rotation (max |R^T R - I| = {error:.3g}, det = {det:.3g}): expected "
                           f"an orthonormal matrix with det +1, within {tol:g}")
    return r


def check_pose(pose: Any, source: Any, what: str = "pose") -> np.ndarray:
    """A finite 4x4 rigid transform [R t; 0 0 0 1] with R a rotation."""
    pose = check_finite(pose, source, what, ("row", "column"))
    check_values(pose[3], pose[3] == [0, 0, 0, 1], source, f"{what} bottom row", "[0, 0, 0, 1]", ("column",))
    check_rotation(pose[:3, :3], source, f"{what} R")
    return pose


def check_intrinsics(k: Any, source: Any, what: str = "intrinsics") -> np.ndarray:
    """A finite pinhole 3x3 K: focal lengths > 0, bottom row [0, 0, 1]."""
    k = check_finite(k, source, what, ("row", "column"))
    check_values(k[[0, 1], [0, 1]], k[[0, 1], [0, 1]] > 0, source, what, "a focal length > 0", (("fx", "fy"),))
    check_values(k[2], k[2] == [0, 0, 1], source, f"{what} bottom row", "[0, 0, 1]", ("column",))
    return k


# ----------------------------------------------------------------------------------------------
# temporal sampling


def sample_indices(length: int, num_frames: int, *, frame_stride: int | None = None, clip_index: int = 0,
                   clips_per_video: int = 1, short_clip: str = "error", source: Any = "clip") -> np.ndarray:
    """Frame indices [num_frames] of clip ``clip_index`` of a source with ``length`` frames.

    ``frame_stride=None``: uniform over the whole source (``linspace(0, length-1)`` rounded; one clip
    per source). ``frame_stride=k``: ``num_frames`` frames ``k`` apart; ``clips_per_video`` such
    windows evenly spaced over the source (one window: centred).
    A source shorter than a clip needs (``num_frames``, or the window span) follows ``short_clip``:
    'error' (a ``DatasetError`` naming ``source``), 'loop' (wrap around to the first frame) or
    'pad' (repeat the last frame).
    """
    if short_clip not in SHORT_CLIP_POLICIES:
        raise option_error("short_clip", short_clip, f"one of {list(SHORT_CLIP_POLICIES)}")
    num_frames = positive_int("num_frames", num_frames)
    stride = 1 if frame_stride is None else positive_int("frame_stride", frame_stride)
    clips_per_video = positive_int("clips_per_video", clips_per_video)
    if frame_stride is None and clips_per_video != 1:
        raise option_error("clips_per_video", clips_per_video,
                           "1 without data.frame_stride (more clips per video needs a frame_stride: uniform sampling "
                           "spans the video)")
    if length < 1:
        raise fail(source, "has no frames")
    span = num_frames if frame_stride is None else (num_frames - 1) * stride + 1
    if length < span:
        if short_clip == "error":
            how = f"num_frames={num_frames}" + (f", frame_stride={stride}" if frame_stride else "")
            raise fail(source, f"has {length} frames, fewer than the {span} a clip needs ({how}); "
                               f"use a longer video or set short_clip=loop or short_clip=pad")
        steps = np.arange(num_frames) * stride
        return steps % length if short_clip == "loop" else np.minimum(steps, length - 1)
    if frame_stride is None:
        return np.round(np.linspace(0, length - 1, num_frames)).astype(np.int64)
    if clips_per_video == 1:
        start = (length - span) // 2
    else:
        start = int(round(clip_index * (length - span) / (clips_per_video - 1)))
    return start + np.arange(num_frames, dtype=np.int64) * stride


# ----------------------------------------------------------------------------------------------
# spatial crop + resize


def parse_resolution(resolution: int | Sequence[int]) -> tuple[int, int]:
    """``64`` -> (64, 64); ``[48, 64]`` -> (48, 64) as (height, width)."""
    allowed = "an integer >= 1 or [height, width] of such integers"
    sizes = list(resolution) if isinstance(resolution, (list, tuple)) else [resolution, resolution]
    if len(sizes) != 2 or not all(isinstance(r, (int, np.integer)) and not isinstance(r, bool) and r >= 1
                                  for r in sizes):
        raise option_error("resolution", resolution, allowed)
    return int(sizes[0]), int(sizes[1])


@dataclass(frozen=True)
class Resize:
    """Crop a (src_h, src_w) image to the aspect ratio of (dst_h, dst_w) around its centre
    (``crop='center'``; ``'none'`` stretches) and resize it; map coordinates the same way."""

    src: tuple[int, int]
    dst: tuple[int, int]
    crop: str = "center"
    box: tuple[int, int, int, int] = field(init=False)  # y0, x0, h, w of the crop in the source

    def __post_init__(self) -> None:
        if self.crop not in CROP_MODES:
            raise option_error("crop", self.crop, f"one of {list(CROP_MODES)}")
        (sh, sw), (dh, dw) = self.src, self.dst
        ch, cw = sh, sw
        if self.crop == "center":
            if sw * dh > dw * sh:  # source wider than the target aspect: crop the width
                cw = max(1, min(sw, int(round(sh * dw / dh))))
            else:
                ch = max(1, min(sh, int(round(sw * dh / dw))))
        object.__setattr__(self, "box", ((sh - ch) // 2, (sw - cw) // 2, ch, cw))

    @property
    def scale(self) -> tuple[float, float]:
        """(sx, sy): output pixels per source pixel."""
        return self.dst[1] / self.box[3], self.dst[0] / self.box[2]

    def image(self, img: np.ndarray, nearest: bool = False) -> np.ndarray:
        """[H, W(, C)] -> [dst_h, dst_w(, C)]; area/linear filtering, or nearest neighbour (depth, masks)."""
        import cv2

        if img.shape[:2] != tuple(self.src):
            raise ValueError(f"image of shape {img.shape[:2]} given to a Resize for {self.src}")
        y0, x0, ch, cw = self.box
        img = img[y0:y0 + ch, x0:x0 + cw]
        if (ch, cw) == tuple(self.dst):
            return np.ascontiguousarray(img)
        if nearest:
            interp = cv2.INTER_NEAREST
        else:
            interp = cv2.INTER_AREA if ch >= self.dst[0] and cw >= self.dst[1] else cv2.INTER_LINEAR
        return cv2.resize(np.ascontiguousarray(img), (self.dst[1], self.dst[0]), interpolation=interp)

    def points(self, xy: np.ndarray) -> np.ndarray:
        """(x, y) continuous pixel coordinates [..., 2] -> the same in the output image."""
        y0, x0, _, _ = self.box
        sx, sy = self.scale
        xy = np.asarray(xy, np.float64)
        return np.stack([(xy[..., 0] - x0) * sx, (xy[..., 1] - y0) * sy], axis=-1)

    def inside(self, xy: np.ndarray) -> np.ndarray:
        """[...] bool: output coordinates that fall inside the output image."""
        h, w = self.dst
        return (xy[..., 0] >= 0) & (xy[..., 0] < w) & (xy[..., 1] >= 0) & (xy[..., 1] < h)

    def boxes(self, xyxy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(x0, y0, x1, y1) [..., 4] -> (boxes clipped to the output image, valid = positive area)."""
        h, w = self.dst
        out = np.concatenate([self.points(np.asarray(xyxy)[..., :2]), self.points(np.asarray(xyxy)[..., 2:])], -1)
        out = np.clip(out, 0, [w, h, w, h])
        valid = (out[..., 2] > out[..., 0]) & (out[..., 3] > out[..., 1])
        return out, valid

    def intrinsics(self, k: np.ndarray) -> np.ndarray:
        """OpenCV 3×3 K of the source image -> K of the output image."""
        y0, x0, _, _ = self.box
        sx, sy = self.scale
        affine = np.array([[sx, 0.0, (0.5 - x0) * sx - 0.5], [0.0, sy, (0.5 - y0) * sy - 0.5], [0.0, 0.0, 1.0]])
        return affine @ np.asarray(k, np.float64)


# ----------------------------------------------------------------------------------------------
# decoding


def decode_image(data: bytes, source: Any, depth16: bool = False) -> np.ndarray:
    """Encoded JPEG/PNG bytes -> RGB uint8 [H, W, 3], or (``depth16``) the raw uint16 [H, W]."""
    import cv2

    if not data:
        raise fail(source, "image is empty (0 bytes)")
    if data[:2] == b"\xff\xd8" and b"\xff\xd9" not in data[-64:]:
        raise fail(source, "truncated JPEG (no end-of-image marker)")
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED if depth16 else cv2.IMREAD_COLOR)
    if img is None:
        raise fail(source, "cannot decode image (corrupt, truncated or not a JPEG/PNG)")
    if depth16:
        if img.dtype != np.uint16 or img.ndim != 2:
            raise fail(source, f"expected a single-channel 16-bit PNG, got {img.dtype} with shape {img.shape}")
        return img
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_image(path: Path, depth16: bool = False) -> np.ndarray:
    """An image file -> RGB uint8 [H, W, 3] (or uint16 [H, W] with ``depth16``); clear errors."""
    return decode_image(check_file(path, "image").read_bytes(), path, depth16)


def declared_frame_count(path: Path) -> int:
    """Frames the container declares (duration × fps as FFmpeg estimates it; 0 when unknown)."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        return max(0, int(round(cap.get(cv2.CAP_PROP_FRAME_COUNT)))) if cap.isOpened() else 0
    finally:
        cap.release()


def open_video(path: Path, check_truncation: bool = True):
    """(decord VideoReader, decodable frame count); empty, unreadable and (``check_truncation``)
    truncated files are errors."""
    import decord

    check_file(path, "video")
    try:
        reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    except Exception as exc:  # decord raises RuntimeError / DECORDError with FFmpeg's words
        raise fail(path, f"cannot open video: corrupt, truncated or not a video ({one_line(exc)})") from None
    length = len(reader)
    if length < 1:
        raise fail(path, "video has no decodable frames")
    declared = declared_frame_count(path) if check_truncation else 0
    if declared and length < declared * (1 - TRUNCATION_TOLERANCE) - 1:
        raise fail(path, f"truncated or corrupt video: the container declares {declared} frames "
                         f"but only {length} can be decoded")
    return reader, length


def decode_frames(reader: Any, indices: np.ndarray, path: Path) -> np.ndarray:
    """Frames ``indices`` of an open reader -> RGB uint8 [T, H, W, 3] (repeats allowed)."""
    uniq, inverse = np.unique(np.asarray(indices, np.int64), return_inverse=True)
    try:
        frames = reader.get_batch(uniq.tolist()).asnumpy()
    except Exception as exc:
        which = uniq.tolist() if len(uniq) <= 8 else f"{len(uniq)} frames"
        raise fail(path, f"corrupt video: decoding frames {which} failed ({one_line(exc)})") from None
    if frames.ndim != 4 or frames.shape[0] != len(uniq) or frames.shape[-1] != 3:
        raise fail(path, f"decoder returned frames of shape {frames.shape}, expected [{len(uniq)}, H, W, 3]")
    return frames[inverse]


def read_video(path: Path, sampling: dict[str, Any], clip_index: int = 0) -> np.ndarray:
    """Sample and decode one clip of a video file -> RGB uint8 [T, H, W, 3] at the file's size."""
    reader, length = open_video(path)
    return decode_frames(reader, sample_indices(length, clip_index=clip_index, source=path, **sampling), path)


# ----------------------------------------------------------------------------------------------
# the dataset base class


@dataclass
class Item:
    """One source video / sequence of a split: ``key`` names it (messages, meta), ``files`` determine
    it (stat'ed for the fingerprint), ``info`` is whatever the adapter needs to load it."""

    key: str
    files: list[Path]
    info: dict[str, Any] = field(default_factory=dict)


def stat_entry(path: Path, base: Path) -> list[Any]:
    """[relative path, size, mtime_ns] of a file or directory (directory: also its entry count)."""
    path = Path(path)
    try:
        rel = str(path.relative_to(base))
    except ValueError:
        rel = str(path)
    st = path.stat()
    entry = [rel, st.st_size, st.st_mtime_ns]
    if path.is_dir():
        entry.append(len(os.listdir(path)))
    return entry


class AdapterDataset(Dataset):
    """A split of a real dataset as the harness sees it (the interface of the synthetic world).

    Subclasses set ``name``, ``version``, ``provides`` and implement ``_index`` (the split's items,
    reading only annotations) and ``_load`` (one clip as a dict of numpy arrays). This class does
    the rest: split selection (``partition``, ``max_clips``), several clips per video, the
    fingerprint, and ``arrays`` — every clip decoded once and stacked, into memory-mapped ``.npy``
    files under ``<root>/adapters/<name>/<fingerprint>`` (``cache=True``) or into memory. That
    directory is a ``bench.staging`` cache entry: checked against its ``complete.json`` before it
    is served (a damaged one is removed and decoded again); a full disk is a ``DatasetError``.

    ``root`` is the harness cache directory (``paths.cache``); the dataset itself is ``data_dir``.
    """

    name: ClassVar[str]
    version: ClassVar[int] = 1
    provides: ClassVar[tuple[str, ...]]
    object_keys: ClassVar[tuple[str, ...]] = ()  # keys whose values are not numeric arrays (masks)

    def __init__(self, split: str, root: str | Path, data_dir: str | Path | None = None, *, num_frames: int = 16,
                 resolution: int | Sequence[int] = 64, crop: str = "center", frame_stride: int | None = None,
                 clips_per_video: int = 1, short_clip: str = "error", partition: Partition = None,
                 max_clips: int | None = None, missing_videos: str = "error", check_truncation: bool = True,
                 cache: bool = True, seed: int = 0, **options: Any):
        if data_dir in (None, "", "???"):
            raise DatasetError(f"dataset {self.name!r}: data_dir is not set; pass data.data_dir=<the dataset "
                               f"directory> (see docs/datasets.md)")
        if missing_videos not in ("error", "skip"):
            raise option_error("missing_videos", missing_videos, "'error' or 'skip'")
        self.split, self.root, self.data_dir = str(split), Path(root), check_dir(Path(data_dir), "data_dir")
        self.sampling = dict(num_frames=num_frames, frame_stride=frame_stride, clips_per_video=clips_per_video,
                             short_clip=short_clip)
        sample_indices(10**6, clip_index=0, source="config", **self.sampling)  # validate the options
        Resize((1, 1), (1, 1), crop)  # validate crop
        positive_int("max_clips", max_clips, optional=True)
        self.num_frames, self.size, self.crop = num_frames, parse_resolution(resolution), crop
        self.missing_videos, self.cache, self.seed = missing_videos, bool(cache), int(seed)
        self.check_truncation = bool(check_truncation)
        self.options = options
        self.config = dict(num_frames=self.num_frames, resolution=list(self.size), crop=crop, frame_stride=frame_stride,
                           clips_per_video=int(clips_per_video), short_clip=short_clip, partition=partition,
                           max_clips=max_clips, missing_videos=missing_videos, check_truncation=self.check_truncation,
                           seed=self.seed, **options)
        self._split_names: set[str] = set()  # the splits of the per-split options ``_setup`` read
        self._setup()
        bounds = self._partition_bounds(partition)
        self._skipped = 0
        items = sorted(self._index(), key=lambda it: it.key)
        if self._skipped:
            warnings.warn(f"dataset {self.name!r} split {self.split!r}: left out {self._skipped} clip(s) whose "
                          f"video is missing (missing_videos=skip)", RuntimeWarning, stacklevel=2)
        items = self._select(items, bounds, max_clips)
        if not items:
            raise DatasetError(f"dataset {self.name!r} split {self.split!r} has no clips under {self.data_dir}")
        self.items = items
        self.clips = [(i, c) for i in range(len(items)) for c in range(self.sampling["clips_per_video"])]
        self._arrays: dict[str, np.ndarray] | None = None
        self._fingerprint: str | None = None

    # --- to implement ---------------------------------------------------------------------
    def _setup(self) -> None:
        """Read configuration that ``_index`` needs (called once, before it)."""

    def _index(self) -> list[Item]:
        raise NotImplementedError

    def _load(self, item: Item, clip_index: int) -> dict[str, Any]:
        raise NotImplementedError

    @property
    def meta(self) -> dict[str, Any]:
        return {"clip_ids": [self.clip_id(i) for i in range(len(self))]}

    # --- helpers for subclasses -----------------------------------------------------------
    def per_split(self, mapping: Any, what: str) -> Any:
        """``mapping[split]`` of a per-split config entry, or a clear error listing the splits; the
        splits it names are those ``partition`` may name."""
        if isinstance(mapping, dict):
            self._split_names.update(map(str, mapping))
        if not isinstance(mapping, dict) or self.split not in mapping:
            known = list(mapping) if isinstance(mapping, dict) else mapping
            raise DatasetError(f"dataset {self.name!r}: no split {self.split!r} in its {what} config (has {known})")
        return mapping[self.split]

    def path(self, rel: str | Path) -> Path:
        """A config path: relative ones are under ``data_dir``."""
        p = Path(rel)
        return p if p.is_absolute() else self.data_dir / p

    def resize_for(self, height: int, width: int) -> Resize:
        return Resize((int(height), int(width)), self.size, self.crop)

    def indices(self, length: int, clip_index: int, source: Any) -> np.ndarray:
        return sample_indices(length, clip_index=clip_index, source=source, **self.sampling)

    def video_clip(self, path: Path, clip_index: int) -> np.ndarray:
        """Clip ``clip_index`` of a video file, sampled, cropped and resized: uint8 [T, h, w, 3]."""
        reader, length = open_video(path, self.check_truncation)
        frames = decode_frames(reader, self.indices(length, clip_index, path), path)
        resize = self.resize_for(*frames.shape[1:3])
        return np.stack([resize.image(f) for f in frames]).astype(np.uint8)

    def missing(self, path: Path, what: str) -> bool:
        """True (skip the item) for a missing video under ``missing_videos=skip``, else an error."""
        if self.missing_videos == "skip":
            self._skipped += 1
            return True
        raise fail(path, f"{what} not found (set data.missing_videos=skip to leave such clips out)")

    def rng(self, key: str) -> np.random.Generator:
        """A generator fixed by (seed, item key): the same choices on every machine and run."""
        return np.random.default_rng([self.seed, zlib.crc32(key.encode())])

    # --- split selection --------------------------------------------------------------------
    def _partition_bounds(self, partition: Partition) -> tuple[float, float] | None:
        """This split's (lo, hi) of ``partition``, after checking every entry: a 2-list of fractions
        0 <= lo < hi <= 1 under a split name this dataset's per-split options have."""
        if not isinstance(partition, dict):
            if partition is None:
                return None
            raise option_error("partition", partition, PARTITION_FORM)
        if not partition:
            return None
        for split, bounds in partition.items():
            if not (isinstance(bounds, (list, tuple)) and len(bounds) == 2 and all(map(_is_fraction, bounds))
                    and bounds[0] <= bounds[1]):
                raise option_error(f"partition.{split}", bounds, "[lo, hi] with 0 <= lo <= hi <= 1")
            if bounds[0] == bounds[1]:
                raise option_error(f"partition.{split}", bounds, "lo < hi (an empty range keeps no video)")
        unknown = [s for s in partition if self._split_names and str(s) not in self._split_names]
        if unknown:
            raise option_error(f"partition.{unknown[0]}", partition[unknown[0]],
                               f"a split of dataset {self.name!r} (it has {sorted(self._split_names)})")
        lo, hi = self.per_split(partition, "partition")
        return float(lo), float(hi)

    def _select(self, items: list[Item], bounds: tuple[float, float] | None, max_clips: int | None) -> list[Item]:
        if bounds is not None:
            lo, hi = bounds
            n = len(items)
            items = items[int(round(lo * n)):int(round(hi * n))]
        if max_clips is not None and len(items) > int(max_clips):
            keep = np.sort(np.random.default_rng(self.seed).permutation(len(items))[:int(max_clips)])
            items = [items[i] for i in keep]
        return items

    # --- the dataset interface --------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.clips)

    def clip_id(self, i: int) -> str:
        item, c = self.clips[i]
        return self.items[item].key + (f"#{c}" if self.sampling["clips_per_video"] > 1 else "")

    def load_clip(self, i: int) -> dict[str, Any]:
        item, c = self.clips[i]
        clip = self._load(self.items[item], c)
        missing = [k for k in self.provides if k not in clip]
        if missing:  # a bug in an adapter, not in the data
            raise RuntimeError(f"{type(self).__name__}._load returned no {missing}")
        return clip

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"clip {i} out of range for {len(self)} clips")
        i %= len(self)
        if self._arrays is not None:
            clip = {k: np.array(v[i]) if k not in self.object_keys else v[i] for k, v in self._arrays.items()}
        else:
            clip = self.load_clip(i)
        return {k: v.item() if np.ndim(v) == 0 and isinstance(v, (np.ndarray, np.generic)) else v
                for k, v in clip.items()}  # scalars (the action label) as Python numbers

    def arrays(self, keys: Iterable[str]) -> dict[str, np.ndarray]:
        """{key: array stacked over every clip of the split} (decoded once, then cached)."""
        keys = list(keys)
        unknown = [k for k in keys if k not in self.provides]
        if unknown:
            raise KeyError(f"dataset {self.name!r} does not provide {unknown} (it provides {list(self.provides)})")
        if self._arrays is None:
            self._arrays = self._materialize()
        return {k: self._arrays[k] for k in keys}

    @property
    def fingerprint(self) -> str:
        """sha256 of the adapter (name, version), its config and the split, and the size + mtime of
        every file (and the size, mtime and entry count of every frame directory) it reads."""
        if self._fingerprint is None:
            files = sorted({str(p): stat_entry(p, self.data_dir)
                            for it in self.items for p in it.files}.values(), key=lambda e: e[0])
            files += [stat_entry(p, self.data_dir) for p in self._annotation_files()]
            payload = {"adapter": self.name, "version": self.version, "split": self.split, "config": self.config,
                       "items": [it.key for it in self.items], "files": files}
            self._fingerprint = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()
        return self._fingerprint

    def _annotation_files(self) -> list[Path]:
        """Files read for the whole split (annotation files); items add their own."""
        return []

    # --- decoding every clip ------------------------------------------------------------------
    def _materialize(self) -> dict[str, np.ndarray]:
        """Every key stacked over the split: decoded into memory (``cache=False``), or read from its
        checked cache entry, which is written first when missing or damaged."""
        if not self.cache:
            return self._decode_all(None)
        entry = self.root / "adapters" / self.name / self.fingerprint
        _, arrays = cached_entry(entry, ENTRY_META, len(self), self._build, DatasetError)
        return {k: _from_json(arrays[f"{k}.npy"]) if k in self.object_keys else arrays[f"{k}.npy"]
                for k in self.provides}

    def _build(self, entry: EntryWriter) -> dict[str, Any]:
        """Decode every clip into ``entry``; object values (masks) go in as one JSON string each."""
        out = self._decode_all(entry)
        for k in self.object_keys:
            encoded = _to_json(out[k])
            entry.array(f"{k}.npy", encoded.shape, encoded.dtype)[:] = encoded
        return {"adapter": self.name, "split": self.split, "clips": len(self), "keys": list(self.provides)}

    def _decode_all(self, entry: EntryWriter | None) -> dict[str, Any]:
        """Every clip stacked per key: numeric keys written to ``entry`` in clip order (or kept in
        memory without one), object keys in memory."""
        from tqdm import tqdm

        out: dict[str, Any] = {}
        first: dict[str, tuple[int, ...]] = {}
        for i in tqdm(range(len(self)), desc=f"{self.name}/{self.split} decode", unit="clip", leave=False):
            clip = self.load_clip(i)
            for k in self.provides:
                value = clip[k] if k in self.object_keys else np.asarray(clip[k])
                if i == 0:
                    first[k] = np.shape(value)
                    out[k] = (np.empty((len(self), *first[k]), object) if k in self.object_keys
                              else self._new_array(entry, k, (len(self), *first[k]), value.dtype))
                elif np.shape(value) != first[k]:
                    raise DatasetError(f"{self.clip_id(i)}: {k!r} has shape {np.shape(value)}, but clip "
                                       f"{self.clip_id(0)} has {first[k]}; clips must share one shape")
                out[k][i] = value
        return out

    @staticmethod
    def _new_array(entry: EntryWriter | None, key: str, shape: tuple[int, ...],
                   dtype: np.dtype) -> np.ndarray | NpyWriter:
        """An array for ``key`` filled row by row: in memory, or ``<key>.npy`` of the cache entry."""
        if entry is None:
            return np.empty(shape, dtype)
        return entry.array(f"{key}.npy", shape, dtype)


def _to_json(values: np.ndarray) -> np.ndarray:
    """An object array as a bytes array of the same shape holding each value's JSON (so it is
    stored, sized and checksummed like any other array of the entry)."""
    encoded = np.array([json.dumps(v).encode() for v in values.reshape(-1)], dtype=bytes)
    return encoded.reshape(values.shape)


def _from_json(encoded: np.ndarray) -> np.ndarray:
    """The object array that ``_to_json`` encoded."""
    return np.frompyfunc(json.loads, 1, 1)(encoded)
