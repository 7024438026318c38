"""VIP (Video Instance-level Parsing, Zhou et al. 2018) human-part segmentation -> video and part
category ids per pixel (``segmentation``, 0 = background, 1–19 = hat … right-shoe), for
``mask_propagation``.

Layout (the VIP_Fine release as representations4d's RVM evaluation reads it)::

    <data_dir>/lists/{train,val}_videos.txt                one video name a line
    <data_dir>/Images/<video>/<frame>.jpg                  frames
    <data_dir>/Annotations/Category_ids/<video>/<frame>.png  grayscale PNGs: pixel value = part id

The same reader as DAVIS (``bench/data/davis.py``) with VIP's paths. Published VIP numbers are a
mean IoU over the 20 part classes (CRW ``eval/eval_vip.py``); mask_propagation scores J&F per id.
"""
from __future__ import annotations

from typing import Any, ClassVar

from bench.data.davis import Davis
from bench.registry import DATASETS


@DATASETS.register("vip")
class VIP(Davis):
    name = "vip"
    version = 1
    layout: ClassVar[dict[str, Any]] = {
        "lists": {"train": "lists/train_videos.txt", "test": "lists/val_videos.txt"},
        "frames_dir": "Images", "masks_dir": "Annotations/Category_ids", "frame_ext": ".jpg",
        "num_classes": 20}  # background + 19 parts
