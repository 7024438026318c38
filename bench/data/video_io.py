"""Shared machinery of the real-dataset adapters: clear errors, video/image decoding, temporal
sampling, spatial crop + resize with the matching coordinate maps, and ``AdapterDataset``, the
base class that turns a per-clip loader into the dataset interface the harness uses.

Conventions (DESIGN.md §3):
- every clip is ``num_frames`` frames sampled from its source (``sample_indices``) and cropped to
  the aspect ratio of ``resolution`` around the centre, then resized (``Resize``), so all clips of
  a split have the same shape and stack into one array per key;
- point and box coordinates are continuous pixel coordinates whose pixel ``i`` spans [i, i+1)
  (COCO boxes, TAP-Vid points); intrinsics are OpenCV matrices (pixel ``i`` is centred on ``i``),
  so resizing by ``s`` maps ``c -> (c + 0.5) * s - 0.5``;
- a problem with a file raises ``DatasetError`` (a ``ValueError``): one line that starts with the
  file's path and says what is wrong with it.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterable, Sequence

import numpy as np
from torch.utils.data import Dataset

from bench.errors import UserError
from bench.staging import staged_directory

SHORT_CLIP_POLICIES = ("error", "loop", "pad")
CROP_MODES = ("center", "none")
# A video decoding fewer frames than its container declares, by more than this fraction, is
# reported as truncated (frame counts derived from a container's duration are estimates).
TRUNCATION_TOLERANCE = 0.1


class DatasetError(UserError, ValueError):
    """A dataset file that is missing, empty, corrupt, truncated or malformed; the message is one
    line naming the file."""


def fail(path: Any, problem: str) -> DatasetError:
    """``DatasetError('<path>: <problem>')`` with the problem squeezed onto one line."""
    return DatasetError(f"{path}: {one_line(problem)}")


def one_line(text: Any, limit: int = 300) -> str:
    """First non-empty line of ``text``, without decord's ``[hh:mm:ss] /src/file.cc:123:`` log prefixes."""
    text = re.sub(r"\[\d\d:\d\d:\d\d\] \S+?:\d+: ", "", str(text))
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    line = lines[0] if lines else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def check_file(path: Path, what: str = "file") -> Path:
    """``path`` if it is a non-empty regular file, else a ``DatasetError`` naming it."""
    path = Path(path)
    if not path.exists():
        raise fail(path, f"{what} not found")
    if not path.is_file():
        raise fail(path, f"{what} is not a regular file")
    if path.stat().st_size == 0:
        raise fail(path, f"{what} is empty (0 bytes)")
    return path


def check_dir(path: Path, what: str = "directory") -> Path:
    path = Path(path)
    if not path.is_dir():
        raise fail(path, f"{what} not found" if not path.exists() else f"{what} is not a directory")
    return path


def load_json(path: Path) -> Any:
    """A JSON annotation file; empty, missing and malformed files are ``DatasetError``s naming it."""
    check_file(path, "annotation file")
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise fail(path, f"not valid JSON ({exc})") from None


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
        raise ValueError(f"short_clip={short_clip!r}: expected one of {SHORT_CLIP_POLICIES}")
    if num_frames < 1:
        raise ValueError(f"num_frames={num_frames}: expected >= 1")
    if frame_stride is None and clips_per_video != 1:
        raise ValueError("clips_per_video > 1 needs a frame_stride (uniform sampling spans the whole video)")
    if length < 1:
        raise fail(source, "has no frames")
    stride = 1 if frame_stride is None else int(frame_stride)
    if stride < 1:
        raise ValueError(f"frame_stride={frame_stride}: expected >= 1")
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
    if isinstance(resolution, (int, np.integer)):
        size = (int(resolution), int(resolution))
    else:
        size = tuple(int(r) for r in resolution)
        if len(size) != 2:
            raise ValueError(f"resolution={resolution!r}: expected an int or [height, width]")
    if min(size) < 1:
        raise ValueError(f"resolution={resolution!r}: must be positive")
    return size  # type: ignore[return-value]


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
            raise ValueError(f"crop={self.crop!r}: expected one of {CROP_MODES}")
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
    files under ``<root>/adapters/<name>/<fingerprint>`` (``cache=True``) or into memory.

    ``root`` is the harness cache directory (``paths.cache``); the dataset itself is ``data_dir``.
    """

    name: ClassVar[str]
    version: ClassVar[int] = 1
    provides: ClassVar[tuple[str, ...]]
    object_keys: ClassVar[tuple[str, ...]] = ()  # keys whose values are not numeric arrays (masks)

    def __init__(self, split: str, root: str | Path, data_dir: str | Path | None = None, *, num_frames: int = 16,
                 resolution: int | Sequence[int] = 64, crop: str = "center", frame_stride: int | None = None,
                 clips_per_video: int = 1, short_clip: str = "error", partition: dict[str, Sequence[float]] | None = None,
                 max_clips: int | None = None, missing_videos: str = "error", check_truncation: bool = True,
                 cache: bool = True, seed: int = 0, **options: Any):
        if data_dir in (None, "", "???"):
            raise DatasetError(f"dataset {self.name!r}: data_dir is not set; pass data.data_dir=<the dataset "
                               f"directory> (see docs/datasets.md)")
        if missing_videos not in ("error", "skip"):
            raise ValueError(f"missing_videos={missing_videos!r}: expected 'error' or 'skip'")
        self.split, self.root, self.data_dir = str(split), Path(root), check_dir(Path(data_dir), "data_dir")
        self.num_frames, self.size, self.crop = int(num_frames), parse_resolution(resolution), crop
        self.sampling = dict(num_frames=self.num_frames, frame_stride=frame_stride,
                             clips_per_video=int(clips_per_video), short_clip=short_clip)
        sample_indices(10**6, clip_index=0, source="config", **self.sampling)  # validate the options
        Resize((1, 1), (1, 1), crop)  # validate crop
        self.missing_videos, self.cache, self.seed = missing_videos, bool(cache), int(seed)
        self.check_truncation = bool(check_truncation)
        self.options = options
        self.config = dict(num_frames=self.num_frames, resolution=list(self.size), crop=crop, frame_stride=frame_stride,
                           clips_per_video=int(clips_per_video), short_clip=short_clip, partition=partition,
                           max_clips=max_clips, missing_videos=missing_videos, check_truncation=self.check_truncation,
                           seed=self.seed, **options)
        self._setup()
        self._skipped = 0
        items = sorted(self._index(), key=lambda it: it.key)
        if self._skipped:
            warnings.warn(f"dataset {self.name!r} split {self.split!r}: left out {self._skipped} clip(s) whose "
                          f"video is missing (missing_videos=skip)", RuntimeWarning, stacklevel=2)
        items = self._select(items, partition, max_clips)
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
        """``mapping[split]`` of a per-split config entry, or a clear error listing the splits."""
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
    def _select(self, items: list[Item], partition: dict[str, Sequence[float]] | None,
                max_clips: int | None) -> list[Item]:
        if partition:
            lo, hi = (float(x) for x in self.per_split(partition, "partition"))
            if not 0.0 <= lo <= hi <= 1.0:
                raise ValueError(f"partition[{self.split!r}] = [{lo}, {hi}]: expected 0 <= lo <= hi <= 1")
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
        entry = self.root / "adapters" / self.name / self.fingerprint
        if not self.cache:
            return self._decode_all(None)
        if not (entry / "complete.json").exists():
            with staged_directory(entry, marker="complete.json") as tmp:
                out = self._decode_all(tmp)
                for k in self.object_keys:
                    (tmp / f"{k}.json").write_text(json.dumps({"shape": out[k].shape,
                                                               "values": out[k].reshape(-1).tolist()}))
                for v in out.values():
                    if isinstance(v, np.memmap):
                        v.flush()
                (tmp / "complete.json").write_text(json.dumps({"adapter": self.name, "split": self.split,
                                                               "clips": len(self), "keys": list(self.provides)}))
        return self._load_entry(entry)

    def _decode_all(self, tmp: Path | None) -> dict[str, Any]:
        """Every clip stacked per key: memmaps in ``tmp`` (object keys in memory), or all in memory."""
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
                              else self._new_array(tmp, k, (len(self), *first[k]), value.dtype))
                elif np.shape(value) != first[k]:
                    raise DatasetError(f"{self.clip_id(i)}: {k!r} has shape {np.shape(value)}, but clip "
                                       f"{self.clip_id(0)} has {first[k]}; clips must share one shape")
                out[k][i] = value
        return out

    @staticmethod
    def _new_array(tmp: Path | None, key: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        if tmp is None:
            return np.empty(shape, dtype)
        from numpy.lib.format import open_memmap

        return open_memmap(tmp / f"{key}.npy", mode="w+", dtype=dtype, shape=shape)

    def _load_entry(self, entry: Path) -> dict[str, np.ndarray]:
        out: dict[str, Any] = {}
        for k in self.provides:
            if k in self.object_keys:
                stored = json.loads((entry / f"{k}.json").read_text())
                arr = np.empty(len(stored["values"]), dtype=object)
                arr[:] = stored["values"]
                out[k] = arr.reshape(stored["shape"])
            else:
                out[k] = np.load(entry / f"{k}.npy", mmap_mode="r")
        return out

