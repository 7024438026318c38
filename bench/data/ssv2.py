"""Something-Something v2 (Goyal et al. 2017) -> video, label.

``labels.json`` maps each of the 174 action templates (with "something" for the placeholders) to
its class id (a string); ``train.json`` / ``validation.json`` list ``{"id", "label", "template",
"placeholders"}`` per video; the videos are ``<videos_dir>/<id>.webm``. A video's class is
``labels[template without brackets]`` ("Putting [something] on [something]" -> "Putting something
on something"), as in the official loaders. ``meta['label_names']`` lists the templates by class id.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bench.data.video_io import AdapterDataset, Item, check_dir, fail, load_json
from bench.registry import DATASETS


@DATASETS.register("ssv2")
class SSv2(AdapterDataset):
    name = "ssv2"
    version = 1
    provides = ("video", "label")

    def __init__(self, split: str, root: str | Path, data_dir: str | Path | None = None, *,
                 labels: str = "labels.json", annotations: dict[str, str] | None = None,
                 videos_dir: str = "20bn-something-something-v2", video_ext: str = ".webm", **common: Any):
        annotations = annotations or {"train": "train.json", "test": "validation.json"}
        super().__init__(split, root, data_dir, labels=labels, annotations=annotations, videos_dir=videos_dir,
                         video_ext=video_ext, **common)

    def _setup(self) -> None:
        self.labels_file = self.path(self.options["labels"])
        self.annotation_file = self.path(self.per_split(self.options["annotations"], "annotations"))
        self.videos_dir = check_dir(self.path(self.options["videos_dir"]), "videos_dir")
        labels = load_json(self.labels_file)
        if not isinstance(labels, dict) or not labels:
            raise fail(self.labels_file, "expected a JSON object mapping template -> class id")
        self.class_of = {str(name): self._class_id(name, cid) for name, cid in labels.items()}
        n = len(self.class_of)
        if sorted(self.class_of.values()) != list(range(n)):
            raise fail(self.labels_file, f"class ids must be 0..{n - 1}, each once")
        self.label_names = [""] * n
        for name, cid in self.class_of.items():
            self.label_names[cid] = name

    def _class_id(self, name: str, cid: Any) -> int:
        """A class id of labels.json: an integer or an integer string ("12"); 1.5, true, "x" are refused."""
        if isinstance(cid, int) and not isinstance(cid, bool):
            return cid
        if isinstance(cid, str) and cid.strip().isdecimal():
            return int(cid)
        raise fail(self.labels_file, f"template {name!r}: class id {cid!r}: expected an integer (or integer string)")

    def _annotation_files(self) -> list[Path]:
        return [self.labels_file, self.annotation_file]

    @property
    def meta(self) -> dict[str, Any]:
        return {**super().meta, "label_names": list(self.label_names)}

    def _index(self) -> list[Item]:
        entries = load_json(self.annotation_file)
        if not isinstance(entries, list):
            raise fail(self.annotation_file, "expected a JSON list of {id, label, template, placeholders}")
        items = []
        for n, entry in enumerate(entries):
            if not isinstance(entry, dict):
                raise fail(self.annotation_file, f"entry {n}: expected an object, found {type(entry).__name__}")
            missing = [f for f in ("id", "template") if f not in entry]
            if missing:
                raise fail(self.annotation_file, f"entry {n}: missing field(s) {missing}")
            template = str(entry["template"]).replace("[", "").replace("]", "")
            if template not in self.class_of:
                raise fail(self.annotation_file, f"entry {n} (id {entry['id']}): template {template!r} is not in "
                                                 f"{self.labels_file.name}")
            video = self.videos_dir / f"{entry['id']}{self.options['video_ext']}"
            if not video.exists() and self.missing(video, "video"):
                continue
            items.append(Item(str(entry["id"]), [video], {"video": video, "label": self.class_of[template]}))
        return items

    def _load(self, item: Item, clip_index: int) -> dict[str, Any]:
        return {"video": self.video_clip(item.info["video"], clip_index), "label": np.int64(item.info["label"])}
