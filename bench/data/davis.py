"""DAVIS-2017 (Pont-Tuset et al. 2017) semi-supervised video object segmentation -> video and
object ids per pixel (``segmentation`` [T, H, W], 0 = background), for ``mask_propagation``.

Layout (the davis-2017 release; representations4d's RVM evaluation reads the same)::

    <data_dir>/ImageSets/2017/{train,val}.txt      one sequence name a line
    <data_dir>/JPEGImages/480p/<seq>/00000.jpg …   frames
    <data_dir>/Annotations/480p/<seq>/00000.png …  palette PNGs: pixel value = object id

Frames are sampled among the annotated ones (a frame's annotation has its stem); annotations are
resized with nearest neighbour. Value 255 (void, which davis2017-evaluation leaves out of its
scores) is read as background. ``bench/data/vip.py`` reuses this adapter for VIP's layout.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from bench.data.video_io import AdapterDataset, Item, check_dir, check_file, check_range, fail, found, read_image
from bench.registry import DATASETS

VOID = 255


def read_label(path: Path, num_classes: int | None = None) -> np.ndarray:
    """A palette or grayscale PNG -> uint8 ids [H, W] (void 255 -> 0); RGB images are refused,
    since their colours are not ids, and so are ids >= ``num_classes`` when the dataset has a fixed
    class list (VIP's parts)."""
    from PIL import Image, UnidentifiedImageError

    check_file(path, "annotation")
    try:
        with Image.open(path) as img:
            if img.mode not in ("P", "L"):
                raise fail(path, f"annotation is a {img.mode!r} image; expected a palette ('P') or grayscale ('L') PNG of ids")
            ids = np.array(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise fail(path, f"cannot decode annotation PNG ({exc})") from None
    ids[ids == VOID] = 0
    if num_classes is not None:
        check_range(ids, path, "annotation", 0, num_classes - 1, ("row", "column"),
                    note=f" (the dataset's {num_classes} class ids; {VOID} is void)")
    return ids


@DATASETS.register("davis")
class Davis(AdapterDataset):
    name = "davis"
    version = 1
    provides = ("video", "segmentation")
    layout: ClassVar[dict[str, Any]] = {
        "lists": {"train": "ImageSets/2017/train.txt", "test": "ImageSets/2017/val.txt"},
        "frames_dir": "JPEGImages/480p", "masks_dir": "Annotations/480p", "frame_ext": ".jpg",
        "num_classes": None}  # object ids: no fixed class list

    def __init__(self, split: str, root: str | Path, data_dir: str | Path | None = None, **common: Any):
        options = {k: common.pop(k, v) for k, v in self.layout.items()}
        super().__init__(split, root, data_dir, **options, **common)

    def _setup(self) -> None:
        self.list_file = check_file(self.path(self.per_split(self.options["lists"], "lists")), "sequence list")

    def _annotation_files(self) -> list[Path]:
        return [self.list_file]

    def _index(self) -> list[Item]:
        names = [ln.strip() for ln in self.list_file.read_text().splitlines() if ln.strip()]
        if not names:
            raise fail(self.list_file, "lists no sequence")
        items = []
        for seq in names:
            frames, what = self.path(self.options["frames_dir"]) / seq, f"frames of sequence {seq!r}"
            if not found(frames, what) and self.missing(frames, what):
                continue
            frames = check_dir(frames, what)
            masks = check_dir(self.path(self.options["masks_dir"]) / seq, f"annotations of sequence {seq!r}")
            items.append(Item(seq, [frames, masks], {"frames": frames, "masks": masks}))
        return items

    def _pairs(self, item: Item) -> list[tuple[Path, Path]]:
        """(frame, annotation) files of a sequence, in order, for every annotated frame."""
        frames, masks = item.info["frames"], item.info["masks"]
        labels = sorted(masks.glob("*.png"))
        if not labels:
            raise fail(masks, "holds no annotation PNG")
        pairs = [(frames / f"{m.stem}{self.options['frame_ext']}", m) for m in labels]
        lost = [m.name for f, m in pairs if not f.is_file()]
        if lost:
            raise fail(masks, f"annotations {lost[:3]} have no frame in {frames} ({len(lost)} in all)")
        return pairs

    def _load(self, item: Item, clip_index: int) -> dict[str, Any]:
        pairs = self._pairs(item)
        video, seg, resize = [], [], None
        for i in self.indices(len(pairs), clip_index, item.info["masks"]):
            frame_path, label_path = pairs[int(i)]
            img, ids = read_image(frame_path), read_label(label_path, self.options["num_classes"])
            if ids.shape != img.shape[:2]:
                raise fail(label_path, f"annotation is {ids.shape}, its frame {frame_path.name} is {img.shape[:2]}")
            resize = resize or self.resize_for(*img.shape[:2])
            if img.shape[:2] != resize.src:
                raise fail(frame_path, f"frame is {img.shape[:2]}, the sequence's first sampled frame {resize.src}")
            video.append(resize.image(img))
            seg.append(resize.image(ids, nearest=True))
        return {"video": np.stack(video).astype(np.uint8), "segmentation": np.stack(seg).astype(np.uint8)}
