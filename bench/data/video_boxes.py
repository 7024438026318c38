"""Video instance boxes and masks in the COCO-style video layout of YouTube-VIS (Yang et al. 2019)
-> video, boxes, box_valid, masks.

One JSON file per split: ``videos`` [{id, file_names (one JPEG per frame, relative to the frames
directory), height, width, length}], ``annotations`` [{id, video_id, category_id, bboxes (per frame
[x, y, w, h] or null), segmentations (per frame RLE / polygons or null; optional)}] and
``categories`` [{id, name}]. Each clip keeps ``max_objects`` objects — those visible in its first
frame first (box tracking queries the first-frame box), then by annotation id — padded with
invalid ones. Boxes become (x0, y0, x1, y1) pixels of the cropped and resized clip; a box the crop
removes is invalid. Masks are COCO RLEs (pycocotools, ``counts`` as str) at the clip resolution,
in an object array [M, T] holding None where an object has no segmentation. Videos without
annotations are left out.
"""
from __future__ import annotations

import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from bench.data.video_io import (AdapterDataset, Item, Partition, Resize, check_dir, check_values, fail, load_json,
                                 positive_int, read_image)
from bench.registry import DATASETS


DEFAULT_PARTITION = {"train": (0.0, 0.8), "test": (0.8, 1.0)}
# A box may reach past the frame's border by at most this many pixels: boxes are continuous pixel
# coordinates of the frame ([0, W] x [0, H], COCO's convention, which YouTube-VIS and TAO follow);
# one pixel absorbs rounding and a half-pixel convention mix-up, anything more is a wrong box.
BOX_TOLERANCE_PX = 1.0


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and np.isfinite(x)


def _is_id(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _require_fields(path: Path, where: str, entry: Any, fields: tuple[str, ...]) -> None:
    """Refuse an annotation entry that is not an object or lacks any of ``fields``, naming the file."""
    if not isinstance(entry, dict):
        raise fail(path, f"{where}: expected an object")
    missing = [k for k in fields if k not in entry]
    if missing:
        raise fail(path, f"{where}: missing field(s) {missing}")


def _check_boxes(path: Path, where: str, bboxes: list[Any], width: int, height: int) -> None:
    """Refuse inverted boxes (negative width or height) and boxes reaching more than
    ``BOX_TOLERANCE_PX`` outside the ``width`` x ``height`` frame; null boxes (absent object) pass."""
    boxes = np.array([b if b is not None else [0.0, 0.0, 0.0, 0.0] for b in bboxes], np.float64).reshape(-1, 4)
    xyxy = np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1)
    check_values(boxes[:, 2:], boxes[:, 2:] >= 0, path, f"{where}: bboxes",
                 "a width and height >= 0 (x1 >= x0, y1 >= y0)", ("frame", ("w", "h")))
    lo, hi = -BOX_TOLERANCE_PX, np.array([width, height, width, height]) + BOX_TOLERANCE_PX
    check_values(xyxy, (xyxy >= lo) & (xyxy <= hi), path, f"{where}: bboxes", f"a box inside the {width}x{height} "
                 f"frame (0 <= x <= {width}, 0 <= y <= {height}, within {BOX_TOLERANCE_PX:g} px)",
                 ("frame", ("x0", "y0", "x1", "y1")))


@DATASETS.register("video_boxes")
class VideoBoxes(AdapterDataset):
    name = "video_boxes"
    version = 1
    provides = ("video", "boxes", "box_valid", "masks")
    object_keys = ("masks",)

    def __init__(self, split: str, root: str | Path, data_dir: str | Path | None = None, *,
                 annotations: dict[str, str] | None = None, frames: dict[str, str] | None = None,
                 max_objects: int = 4, partition: Partition = DEFAULT_PARTITION, **common: Any):
        # YouTube-VIS publishes annotations for its train split only: both splits come from it
        annotations = annotations or {"train": "train/instances.json", "test": "train/instances.json"}
        frames = frames or {"train": "train/JPEGImages", "test": "train/JPEGImages"}
        super().__init__(split, root, data_dir, annotations=annotations, frames=frames, partition=partition,
                         max_objects=positive_int("max_objects", max_objects), **common)

    def _setup(self) -> None:
        self.annotation_file = self.path(self.per_split(self.options["annotations"], "annotations"))
        self.frames_dir = check_dir(self.path(self.per_split(self.options["frames"], "frames")), "frames directory")
        self.categories: dict[int, str] = {}

    def _annotation_files(self) -> list[Path]:
        return [self.annotation_file]

    @property
    def meta(self) -> dict[str, Any]:
        return {**super().meta, "categories": dict(self.categories)}

    # --- annotations --------------------------------------------------------------------------
    def _index(self) -> list[Item]:
        path = self.annotation_file
        data = load_json(path)
        if not isinstance(data, dict):
            raise fail(path, "expected a JSON object with 'videos', 'annotations' and 'categories'")
        missing = [k for k in ("videos", "annotations", "categories") if k not in data]
        if missing:
            raise fail(path, f"missing top-level field(s) {missing}")
        for n, cat in enumerate(data["categories"]):
            if not isinstance(cat, dict) or "id" not in cat or "name" not in cat:
                raise fail(path, f"categories[{n}]: expected {{id, name}}")
            if not _is_id(cat["id"]) or cat["id"] in self.categories:
                raise fail(path, f"categories[{n}]: id {cat['id']!r}: expected an integer that no other category has")
            self.categories[cat["id"]] = str(cat["name"])
        videos = {}
        for n, video in enumerate(data["videos"]):
            videos[self._check_video(path, n, video)] = video
        by_video: dict[Any, list[dict[str, Any]]] = defaultdict(list)
        for n, ann in enumerate(data["annotations"]):
            self._check_annotation(path, n, ann, videos, self.categories)
            by_video[ann["video_id"]].append(ann)
        items = []
        for vid, video in videos.items():
            if not by_video.get(vid):
                continue
            files = [self.frames_dir / f for f in video["file_names"]]
            folders = sorted({f.parent for f in files})
            items.append(Item(str(vid), folders, {"video": video, "annotations": sorted(by_video[vid], key=lambda a: a["id"])}))
        return items

    @staticmethod
    def _check_video(path: Path, n: int, video: Any) -> Any:
        where = f"videos[{n}]"
        _require_fields(path, where, video, ("id", "file_names", "height", "width"))
        names = video["file_names"]
        if not isinstance(names, list) or not names or not all(isinstance(f, str) for f in names):
            raise fail(path, f"{where} (id {video['id']}): 'file_names' must be a non-empty list of paths")
        if not all(isinstance(video[k], int) and video[k] > 0 for k in ("height", "width")):
            raise fail(path, f"{where} (id {video['id']}): 'height' and 'width' must be positive integers")
        if "length" in video and video["length"] != len(names):
            raise fail(path, f"{where} (id {video['id']}): 'length' is {video['length']} but there are "
                             f"{len(names)} file_names")
        return video["id"]

    @staticmethod
    def _check_annotation(path: Path, n: int, ann: Any, videos: dict[Any, Any], categories: dict[int, str]) -> None:
        where = f"annotations[{n}]"
        _require_fields(path, where, ann, ("id", "video_id", "category_id", "bboxes"))
        where = f"{where} (id {ann['id']})"
        if ann["video_id"] not in videos:
            raise fail(path, f"{where}: video_id {ann['video_id']} is not in 'videos'")
        if not _is_id(ann["category_id"]) or ann["category_id"] not in categories:
            ids = sorted(categories)
            listed = f" {ids}" if len(ids) <= 10 else f" ({ids[0]} to {ids[-1]}, {len(ids)} ids)"
            raise fail(path, f"{where}: category_id {ann['category_id']!r}: expected an id of 'categories'{listed}")
        video = videos[ann["video_id"]]
        length = len(video["file_names"])
        for field_name in ("bboxes", "segmentations"):
            value = ann.get(field_name)
            if value is None and field_name == "segmentations":  # segmentations are optional
                continue
            if not isinstance(value, list) or len(value) != length:
                found = len(value) if isinstance(value, list) else type(value).__name__
                raise fail(path, f"{where}: '{field_name}' must be a list with one entry per frame "
                                 f"({length}), found {found}")
        for t, box in enumerate(ann["bboxes"]):
            if box is not None and not (isinstance(box, list) and len(box) == 4 and all(map(_is_number, box))):
                raise fail(path, f"{where}: bboxes[{t}] must be [x, y, w, h] or null, found {box!r}")
        _check_boxes(path, where, ann["bboxes"], video["width"], video["height"])
        for t, seg in enumerate(ann.get("segmentations") or []):
            if isinstance(seg, list) and not all(isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0
                                                 and all(map(_is_number, p)) for p in seg):
                raise fail(path, f"{where}: segmentations[{t}]: expected polygons, each a list of finite numbers "
                                 f"x1, y1, x2, y2, ... with at least 3 points")

    # --- clips --------------------------------------------------------------------------------
    def _load(self, item: Item, clip_index: int) -> dict[str, Any]:
        video, anns = item.info["video"], item.info["annotations"]
        h, w = video["height"], video["width"]
        idx = self.indices(len(video["file_names"]), clip_index, f"{self.annotation_file} (video {item.key})")
        resize = self.resize_for(h, w)
        frames = []
        for i in idx:
            image_path = self.frames_dir / video["file_names"][int(i)]
            img = read_image(image_path)
            if img.shape[:2] != (h, w):
                raise fail(image_path, f"image is {img.shape[1]}x{img.shape[0]} but the annotations say {w}x{h}")
            frames.append(resize.image(img))
        m, t = self.options["max_objects"], len(idx)
        objects = []
        for ann in anns:
            raw = [ann["bboxes"][int(i)] for i in idx]
            xyxy = np.array([[b[0], b[1], b[0] + b[2], b[1] + b[3]] if b is not None else [0, 0, 0, 0] for b in raw], np.float64)
            boxes, valid = resize.boxes(xyxy)
            valid &= np.array([b is not None and b[2] > 0 and b[3] > 0 for b in raw])
            objects.append((not valid[0], ann["id"], ann, np.where(valid[:, None], boxes, 0.0), valid))
        objects.sort(key=lambda o: (o[0], o[1]))
        out_boxes = np.zeros((m, t, 4), np.float32)
        out_valid = np.zeros((m, t), bool)
        masks = np.empty((m, t), dtype=object)
        for j, (_, _, ann, boxes, valid) in enumerate(objects[:m]):
            out_boxes[j], out_valid[j] = boxes, valid
            segs = ann.get("segmentations")
            if segs is not None:
                for k, i in enumerate(idx):
                    masks[j, k] = self._mask(segs[int(i)], resize, ann["id"], int(i))
        return {"video": np.stack(frames).astype(np.uint8), "boxes": out_boxes, "box_valid": out_valid, "masks": masks}

    def _mask(self, seg: Any, resize: Resize, ann_id: Any, frame: int) -> dict[str, Any] | None:
        """One frame's segmentation (RLE, uncompressed RLE or polygons) -> RLE at the clip resolution."""
        from pycocotools import mask as mask_utils

        if seg is None:
            return None
        h, w = resize.src
        with warnings.catch_warnings():  # pycocotools' Cython arrays predate numpy 2's copy keyword
            warnings.simplefilter("ignore", DeprecationWarning)
            return self._mask_rle(seg, resize, ann_id, frame, h, w, mask_utils)

    def _mask_rle(self, seg: Any, resize: Resize, ann_id: Any, frame: int, h: int, w: int, mask_utils: Any):
        try:
            if isinstance(seg, list):  # polygons
                rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
            elif isinstance(seg, dict) and isinstance(seg.get("counts"), list):  # uncompressed RLE
                rle = mask_utils.frPyObjects(seg, h, w)
            elif isinstance(seg, dict) and "counts" in seg and "size" in seg:
                rle = {"size": seg["size"], "counts": seg["counts"].encode() if isinstance(seg["counts"], str) else seg["counts"]}
            else:
                raise ValueError(f"expected an RLE {{size, counts}} or a list of polygons, found {type(seg).__name__}")
            if list(rle["size"]) != [h, w]:
                raise ValueError(f"RLE size {list(rle['size'])} differs from the video's {[h, w]}")
            mask = mask_utils.decode(rle)
        except Exception as exc:
            raise fail(self.annotation_file, f"annotation {ann_id}: segmentations[{frame}] is malformed ({exc})") from None
        out = mask_utils.encode(np.asfortranarray(resize.image(mask, nearest=True).astype(np.uint8)))
        return {"size": [int(s) for s in out["size"]], "counts": out["counts"].decode("ascii")}
