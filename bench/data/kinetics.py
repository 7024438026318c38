"""Kinetics-400/600/700 (Kay et al. 2017; the CVDF release) -> video, label.

Annotations are CSV files with columns ``label, youtube_id, time_start, time_end, split`` (and
``is_cc`` in some releases); a clip's file is ``<youtube_id>_<time_start:06d>_<time_end:06d>.mp4``,
either directly in the split's video directory or in a per-class subdirectory (``<label>/`` or
``<label with spaces as _>/``). YouTube takedowns leave every copy of Kinetics with missing clips,
so the shipped config skips them (``missing_videos: skip``). Class ids are the label names sorted
alphabetically, taken from the train CSV (``label_csv``) so every split uses the same ids.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bench.data.video_io import AdapterDataset, Item, check_dir, check_file, fail, found, option_error
from bench.registry import DATASETS

COLUMNS = ("label", "youtube_id", "time_start", "time_end")


def read_csv(path: Path):
    """A Kinetics annotation CSV as a pandas DataFrame, checked for the needed columns."""
    import pandas as pd

    check_file(path, "annotation CSV")
    try:
        frame = pd.read_csv(path, dtype={"youtube_id": str, "label": str})
    except Exception as exc:  # pandas raises ParserError, UnicodeDecodeError, EmptyDataError, ...
        raise fail(path, f"not a readable CSV ({type(exc).__name__}: {exc})") from None
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise fail(path, f"missing column(s) {missing} (has {list(frame.columns)})")
    bad = frame[list(COLUMNS)].isna().any(axis=1)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise fail(path, f"row {row + 2}: empty value in {[c for c in COLUMNS if frame[c].isna().iloc[row]]}")
    for col in ("time_start", "time_end"):
        try:
            frame[col] = frame[col].astype(float).round().astype(int)
        except (TypeError, ValueError):
            raise fail(path, f"column {col!r} must hold numbers (seconds)") from None
    bad = np.flatnonzero(((frame["time_start"] < 0) | (frame["time_end"] <= frame["time_start"])).to_numpy())
    if len(bad):
        start, end = frame["time_start"].iloc[bad[0]], frame["time_end"].iloc[bad[0]]
        raise fail(path, f"row {bad[0] + 2}: time_start={start}, time_end={end}: expected 0 <= time_start < time_end")
    return frame


@DATASETS.register("kinetics")
class Kinetics(AdapterDataset):
    name = "kinetics"
    version = 1
    provides = ("video", "label")

    def __init__(self, split: str, root: str | Path, data_dir: str | Path | None = None, *,
                 annotations: dict[str, str] | None = None, videos: dict[str, str] | None = None,
                 label_csv: str | None = None, **common: Any):
        annotations = annotations or {"train": "annotations/train.csv", "test": "annotations/validate.csv"}
        videos = videos or {"train": "train", "test": "val"}
        super().__init__(split, root, data_dir, annotations=annotations, videos=videos,
                         label_csv=label_csv or annotations.get("train"), **common)

    def _setup(self) -> None:
        self.csv = self.path(self.per_split(self.options["annotations"], "annotations"))
        if not self.options["label_csv"]:
            raise option_error("label_csv", self.options["label_csv"], "the CSV whose labels define the class ids "
                                                                       "(e.g. annotations/train.csv)")
        self.label_file = self.path(self.options["label_csv"])
        self.videos_dir = check_dir(self.path(self.per_split(self.options["videos"], "videos")), "videos directory")
        self.label_names = sorted(set(read_csv(self.label_file)["label"]))

    def _annotation_files(self) -> list[Path]:
        return sorted({self.csv, self.label_file})

    @property
    def meta(self) -> dict[str, Any]:
        return {**super().meta, "label_names": list(self.label_names)}

    def _find(self, label: str, name: str) -> Path | None:
        for candidate in (self.videos_dir / name, self.videos_dir / label / name,
                          self.videos_dir / label.replace(" ", "_") / name):
            if found(candidate, "video"):
                return candidate
        return None

    def _index(self) -> list[Item]:
        class_of = {name: i for i, name in enumerate(self.label_names)}
        items = []
        for row, rec in enumerate(read_csv(self.csv).itertuples(index=False), start=2):
            if rec.label not in class_of:
                raise fail(self.csv, f"row {row}: label {rec.label!r} is not a class of {self.label_file.name}")
            name = f"{rec.youtube_id}_{int(rec.time_start):06d}_{int(rec.time_end):06d}.mp4"
            video = self._find(rec.label, name)
            if video is None and self.missing(self.videos_dir / name, "video"):
                continue
            items.append(Item(Path(name).stem, [video], {"video": video, "label": class_of[rec.label]}))
        return items

    def _load(self, item: Item, clip_index: int) -> dict[str, Any]:
        return {"video": self.video_clip(item.info["video"], clip_index), "label": np.int64(item.info["label"])}
