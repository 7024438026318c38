"""Every adapter checks the values it reads: one table of bad inputs, each written into a fixture in
the dataset's own format, each refused with a ``DatasetError`` (a ``UserError``) whose one line
names the file, the entry (video, track, frame, object, line, row, pixel), the bad value and what
is allowed. Bad adapter options are refused the same way, naming the option."""
from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from bench.errors import DatasetError, UserError
from tests.test_adapters import (SMALL, adapter, frame, make_kinetics, make_realestate, make_scannet, make_ssv2,
                                 make_tapvid, make_video_boxes, write_image)
from tests.test_propagation_adapters import FRAMES, ids, make_davis, make_jhmdb, make_vip, write_ids
from tests.test_reliability import error_line, run_here

MAKERS = {"tapvid": make_tapvid, "video_boxes": make_video_boxes, "scannet": make_scannet,
          "realestate10k": make_realestate, "kinetics": make_kinetics, "davis": make_davis, "vip": make_vip,
          "jhmdb": make_jhmdb, "ssv2": lambda root: make_ssv2(root, ".mp4", "mp4v")}
SPLITS = {"tapvid": "test", "video_boxes": "train", "scannet": "test", "realestate10k": "test", "kinetics": "test",
          "davis": "test", "vip": "test", "jhmdb": "test", "ssv2": "test"}
OPTIONS = {"ssv2": {"video_ext": ".mp4"}}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Callable[[str], Path]:
    """Each dataset's fixture written once (``name -> directory``); cases edit copies of it."""
    made: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in made:
            made[name] = MAKERS[name](tmp_path_factory.mktemp("pristine") / name)
        return made[name]
    return get


def load_all(name: str, data: Path, root: Path, split: str | None = None, **options):
    """Build a split and decode every clip (in memory): index-time and load-time checks both run."""
    ds = adapter(name)(split=split or SPLITS[name], root=root, data_dir=data, cache=False,
                       **{**SMALL, **OPTIONS.get(name, {}), **options})
    return ds.arrays(ds.provides)


# ---------------------------------------------------------------------------------------------
# editors: each changes one thing in a fixture and returns the file the error must name


def tapvid_entry(edit: Callable[[dict], None]) -> Callable[[Path], Path]:
    """Edit video 'bear' of the TAP-Vid-DAVIS pickle."""
    def apply(data: Path) -> Path:
        pkl = data / "tapvid_davis" / "tapvid_davis.pkl"
        videos = pickle.loads(pkl.read_bytes())  # our own fixture
        edit(videos["bear"])
        pkl.write_bytes(pickle.dumps(videos))
        return pkl
    return apply


def tapvid_kinetics_points(data: Path) -> Path:
    pkl = data / "tapvid_kinetics" / "0000_of_0002.pkl"
    videos = pickle.loads(pkl.read_bytes())
    videos[1]["points"][2, 7, 1] = np.nan
    pkl.write_bytes(pickle.dumps(videos))
    return pkl


def setitem(key: str, index, value) -> Callable[[dict], None]:
    def edit(entry: dict) -> None:
        entry[key][index] = value
    return edit


def replace(key: str, make: Callable[[np.ndarray], np.ndarray]) -> Callable[[dict], None]:
    def edit(entry: dict) -> None:
        entry[key] = make(entry[key])
    return edit


def instances(edit: Callable[[dict], None]) -> Callable[[Path], Path]:
    def apply(data: Path) -> Path:
        path = data / "train" / "instances.json"
        doc = json.loads(path.read_text())
        edit(doc)
        path.write_text(json.dumps(doc))
        return path
    return apply


def box(frame_index: int, value, ann: int = 0) -> Callable[[Path], Path]:
    return instances(lambda doc: doc["annotations"][ann]["bboxes"].__setitem__(frame_index, value))


def rewrite(rel: str, write: Callable[[Path], None]) -> Callable[[Path], Path]:
    """Replace file ``rel`` of a dataset by what ``write`` puts there."""
    def apply(data: Path) -> Path:
        write(data / rel)
        return data / rel
    return apply


def scene_file(rel: str, write: Callable[[Path], None]) -> Callable[[Path], Path]:
    return rewrite(f"scans/scene0002_00/{rel}", write)


def text(rel: str, content: str) -> Callable[[Path], Path]:
    return rewrite(rel, lambda path: path.write_text(content))


def pose(matrix: np.ndarray) -> Callable[[Path], None]:
    return lambda path: np.savetxt(path, matrix)


def intrinsics(edit: Callable[[np.ndarray], None]) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        k = np.loadtxt(path)
        edit(k)
        np.savetxt(path, k)
    return write


def camera_line(line: int, change: Callable[[list[str]], None]) -> Callable[[Path], Path]:
    """Edit the fields of line ``line`` (1-based, line 1 is the URL) of RealEstate10K's test camera file."""
    def apply(data: Path) -> Path:
        path = data / "test" / "ccc.txt"
        lines = path.read_text().splitlines()
        fields = lines[line - 1].split()
        change(fields)
        lines[line - 1] = " ".join(fields)
        path.write_text("\n".join(lines) + "\n")
        return path
    return apply


def set_field(index: int, value: str) -> Callable[[list[str]], None]:
    return lambda fields: fields.__setitem__(index, value)


def scale_rotation(fields: list[str]) -> None:
    for i in (7, 8, 9, 11, 12, 13, 15, 16, 17):  # r11..r33 (fields 8-10, 12-14, 16-18)
        fields[i] = str(2 * float(fields[i]))


def joints(pos: np.ndarray) -> Callable[[Path], Path]:
    def apply(data: Path) -> Path:
        path = data / "joint_positions" / "run" / "b" / "joint_positions.mat"
        savemat(path, {"pos_img": pos})
        return path
    return apply


def joint_value(index: tuple[int, int, int], value: float) -> np.ndarray:
    pos = np.full((2, 15, FRAMES), 20.0)
    pos[index] = value
    return pos


def with_id(value: int) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        out = ids(0)
        out[out == 1] = value
        write_ids(path, out, "L")
    return write


def sixteen_bit(path: Path) -> None:
    Image.fromarray(ids(0).astype(np.uint16)).save(path)


def remove(rel: str, named: str | None = None) -> Callable[[Path], Path]:
    def apply(data: Path) -> Path:
        (data / rel).unlink()
        return data / (named or rel)
    return apply


def float_video(v: np.ndarray) -> np.ndarray:
    return v.astype(np.float32) / 255


OUT_OF_FRAME = "expected a box inside the 64x48 frame (0 <= x <= 64, 0 <= y <= 48, within 1 px)"
SSV2_LABELS = "labels.json"
KINETICS_HEADER = "label,youtube_id,time_start,time_end,split\n"

# (dataset, edit, fragments of the message besides the file's path, extra options)
CASES = [
    # TAP-Vid: normalised points in [0, 1] where visible, finite everywhere; uint8 video; 0/1 occlusion
    ("tapvid", tapvid_entry(setitem("points", (0, 5, 0), 1.7)),
     ["video 'bear': 'points' at track 0, frame 5, x is 1.7: expected a value in [0, 1] (normalised coordinates "
      "of a visible point)"], {}),
    ("tapvid", tapvid_entry(setitem("points", (2, 1, 1), -0.25)),
     ["video 'bear': 'points' at track 2, frame 1, y is -0.25: expected a value in [0, 1]"], {}),
    ("tapvid", tapvid_entry(setitem("points", (0, 3, 0), np.nan)),
     ["video 'bear': 'points' at track 0, frame 3, x is non-finite (nan): expected a finite number"], {}),
    ("tapvid", tapvid_entry(setitem("points", (1, 0, 1), np.inf)),  # an occluded frame: still must be finite
     ["video 'bear': 'points' at track 1, frame 0, y is non-finite (inf): expected a finite number"], {}),
    ("tapvid", tapvid_entry(replace("points", lambda p: np.full_like(p, -np.inf))),
     ["video 'bear': 'points' at track 0, frame 0, x is non-finite (-inf): expected a finite number (60 such values)"],
     {}),
    ("tapvid", tapvid_entry(replace("video", float_video)),
     ["video 'bear': 'video' has dtype float32: expected uint8 RGB values 0-255"], {}),
    ("tapvid", tapvid_entry(replace("video", lambda v: v[..., 0])),
     ["video 'bear': 'video' has shape (10, 48, 64), expected [T, H, W, 3]"], {}),
    ("tapvid", tapvid_entry(replace("points", lambda p: (p * 64).astype(np.int64))),
     ["video 'bear': 'points' has dtype int64: expected floats in [0, 1]"], {}),
    ("tapvid", tapvid_entry(replace("occluded", lambda o: o.astype(np.float32))),
     ["video 'bear': 'occluded' has dtype float32: expected booleans (or integers 0/1)"], {}),
    ("tapvid", tapvid_entry(replace("occluded", lambda o: o.astype(np.int64) * 2)),
     ["video 'bear': 'occluded' at track 1, frame 0 is 2: expected 0 or 1"], {}),
    ("tapvid", tapvid_entry(replace("points", lambda p: p[:, :9])),  # 9 frames of tracks, 10 of video
     ["video 'bear': 'points' has shape (3, 9, 2), expected [N, 10, 2] for 10 frames"], {}),
    ("tapvid", tapvid_kinetics_points,
     ["video '1': 'points' at track 2, frame 7, y is non-finite (nan)"], {"split": "train"}),
    # video boxes: finite, not inverted, inside the frame within 1 px; category ids known; polygons finite
    ("video_boxes", box(3, [200.0, 10.0, 20.0, 20.0]),
     [f"annotations[0] (id 2): bboxes at frame 3, x0 is 200: {OUT_OF_FRAME} (2 such values)"], {}),
    ("video_boxes", box(1, [50.0, 10.0, 20.0, 20.0]),
     [f"annotations[0] (id 2): bboxes at frame 1, x1 is 70: {OUT_OF_FRAME}"], {}),
    ("video_boxes", box(2, [10.0, -3.0, 20.0, 20.0]),
     [f"annotations[0] (id 2): bboxes at frame 2, y0 is -3: {OUT_OF_FRAME}"], {}),
    ("video_boxes", box(4, [10.0, 40.0, 20.0, 10.0], ann=1),
     [f"annotations[1] (id 1): bboxes at frame 4, y1 is 50: {OUT_OF_FRAME}"], {}),
    ("video_boxes", box(2, [30.0, 10.0, -5.0, 10.0]),
     ["annotations[0] (id 2): bboxes at frame 2, w is -5: expected a width and height >= 0 (x1 >= x0, y1 >= y0)"],
     {}),
    ("video_boxes", box(5, [30.0, 10.0, 5.0, -10.0]),
     ["annotations[0] (id 2): bboxes at frame 5, h is -10: expected a width and height >= 0"], {}),
    ("video_boxes", box(1, [float("nan"), 1.0, 2.0, 3.0]),
     ["annotations[0] (id 2): bboxes[1] must be [x, y, w, h] or null, found [nan, 1.0, 2.0, 3.0]"], {}),
    ("video_boxes", box(0, [1.0, 1.0, float("inf"), 3.0]),
     ["annotations[0] (id 2): bboxes[0] must be [x, y, w, h] or null, found [1.0, 1.0, inf, 3.0]"], {}),
    ("video_boxes", instances(lambda doc: doc["annotations"][2].__setitem__("category_id", 7)),
     ["annotations[2] (id 12): category_id 7: expected an id of 'categories' [1, 2]"], {}),
    ("video_boxes", instances(lambda doc: doc["annotations"][0].__setitem__("category_id", "1")),
     ["annotations[0] (id 2): category_id '1': expected an id of 'categories' [1, 2]"], {}),
    ("video_boxes", instances(lambda doc: doc["categories"][1].__setitem__("id", 1)),
     ["categories[1]: id 1: expected an integer that no other category has"], {}),
    ("video_boxes", instances(lambda doc: doc["annotations"][0]["segmentations"].__setitem__(3, [[1.0, 2.0, None]])),
     ["annotations[0] (id 2): segmentations[3]: expected polygons, each a list of finite numbers"], {}),
    ("video_boxes", instances(lambda doc: doc["videos"][0].__setitem__("length", 7)),
     ["videos[0] (id 1): 'length' is 7 but there are 6 file_names"], {}),
    # ScanNet: poses rigid (finite, rotation, [0 0 0 1]); intrinsics finite with f > 0; every frame has depth + pose
    ("scannet", scene_file("pose/3.txt", pose(np.diag([2.0, 2.0, 2.0, 1.0]))),
     ["pose R is not a rotation (max |R^T R - I| = 3, det = 8): expected an orthonormal matrix with det +1, "
      "within 0.001"], {}),
    ("scannet", scene_file("pose/5.txt", pose(np.diag([-1.0, 1.0, 1.0, 1.0]))),
     ["pose R is not a rotation (max |R^T R - I| = 0, det = -1)"], {}),
    ("scannet", scene_file("pose/2.txt", pose(np.vstack([np.eye(4)[:3], [0.0, 0.0, 1.0, 1.0]]))),
     ["pose bottom row at column 2 is 1: expected [0, 0, 0, 1]"], {}),
    ("scannet", scene_file("pose/4.txt", pose(np.full((4, 4), np.nan))),
     ["pose is not finite (set skip_invalid_poses=true)"], {"skip_invalid_poses": False}),
    ("scannet", scene_file("intrinsic/intrinsic_color.txt", intrinsics(lambda k: k.__setitem__((0, 2), np.nan))),
     ["colour intrinsics at row 0, column 2 is non-finite (nan): expected a finite number"], {}),
    ("scannet", scene_file("intrinsic/intrinsic_color.txt", intrinsics(lambda k: k.__setitem__((1, 1), -50.0))),
     ["colour intrinsics at fy is -50: expected a focal length > 0"], {}),
    ("scannet", scene_file("depth/6.png", Path.unlink),  # frame 6 is not even sampled (0, 2, 5, 7)
     ["not found: color/ has 8 frames and depth/ lacks 1 of them"], {}),
    ("scannet", scene_file("depth/0.png", lambda p: write_image(p, frame(0))),
     ["expected a single-channel 16-bit PNG, got uint8 with shape (48, 64, 3)"], {}),
    # RealEstate10K: camera lines finite, focal lengths > 0, principal point in [0, 1], R a rotation
    ("realestate10k", camera_line(3, set_field(1, "nan")),
     ["line 3 at fx is non-finite (nan): expected a finite number"], {}),
    ("realestate10k", camera_line(2, set_field(10, "inf")),
     ["line 2 at t1 is non-finite (inf): expected a finite number"], {}),
    ("realestate10k", camera_line(4, set_field(2, "-1.0")),
     ["line 4 at fy is -1: expected a focal length > 0"], {}),
    ("realestate10k", camera_line(5, set_field(3, "1.5")),
     ["line 5 at cx is 1.5: expected a value in [0, 1] (normalised principal point)"], {}),
    ("realestate10k", camera_line(6, scale_rotation),
     ["line 6: world-to-camera R is not a rotation (max |R^T R - I| = 3, det = 8)"], {}),
    # DAVIS / VIP: masks are palette or grayscale ids (VIP: 20 classes); one annotation per frame, same size
    ("vip", rewrite("Annotations/Category_ids/v2/00001.png", with_id(23)),
     ["annotation at row 10, column 20 is 23: expected a value in [0, 19] (the dataset's 20 class ids; 255 is "
      "void) (400 such values)"], {}),
    ("davis", rewrite("Annotations/480p/camel/00000.png", sixteen_bit),
     ["annotation is a 'I;16' image; expected a palette ('P') or grayscale ('L') PNG of ids"], {}),
    ("davis", rewrite("Annotations/480p/goat/00004.png", lambda p: write_ids(p, ids(4)[:40], "P")),
     ["annotation is (40, 64), its frame 00004.jpg is (48, 64)"], {}),
    ("davis", remove("JPEGImages/480p/camel/00002.jpg", "Annotations/480p/camel"),
     ["annotations ['00002.png'] have no frame in", "(1 in all)"], {}),
    # JHMDB: joints finite, 15 of them, one column per frame (joints outside the frame are occluded)
    ("jhmdb", joints(joint_value((0, 3, 2), np.nan)),
     ["'pos_img' at x, joint 3, frame 2 is non-finite (nan): expected a finite number"], {}),
    ("jhmdb", joints(joint_value((1, 14, 4), -np.inf)),
     ["'pos_img' at y, joint 14, frame 4 is non-finite (-inf): expected a finite number"], {}),
    ("jhmdb", joints(np.zeros((2, 14, FRAMES))),
     ["'pos_img' has shape (2, 14, 5), expected [2, 15, frames]"], {}),
    ("jhmdb", joints(np.zeros((2, 15, FRAMES + 2))),
     ["'pos_img' has 7 frames,", "holds 5 PNGs"], {}),
    # SSv2: class ids are integers 0..n-1; templates known
    ("ssv2", text(SSV2_LABELS, json.dumps({"Holding something": 1.5, "Putting something on something": 0,
                                           "Pushing something from left to right": 2})),
     ["template 'Holding something': class id 1.5: expected an integer (or integer string)"], {}),
    ("ssv2", text(SSV2_LABELS, json.dumps({"Holding something": "0", "Putting something on something": True,
                                           "Pushing something from left to right": "2"})),
     ["template 'Putting something on something': class id True: expected an integer"], {}),
    ("ssv2", text(SSV2_LABELS, json.dumps({"Holding something": "0", "Putting something on something": "1",
                                           "Pushing something from left to right": "5"})),
     ["class ids must be 0..2, each once"], {}),
    # Kinetics: times ordered, labels among the train CSV's classes
    ("kinetics", text("annotations/validate.csv", KINETICS_HEADER + "zumba,jkl012,30,20,validate\n"),
     ["row 2: time_start=30, time_end=20: expected 0 <= time_start < time_end"], {}),
    ("kinetics", text("annotations/validate.csv", KINETICS_HEADER + "yoga,jkl012,30,40,validate\n"),
     ["row 2: label 'yoga' is not a class of train.csv"], {}),
]


def case_id(case) -> str:
    name, _, fragments, _ = case
    return f"{name}: {fragments[0][:60]}"


@pytest.mark.parametrize("name,edit,fragments,options", CASES, ids=[case_id(c) for c in CASES])
def test_bad_values_are_refused_naming_file_entry_and_value(tmp_path, pristine, name, edit, fragments, options):
    data = shutil.copytree(pristine(name), tmp_path / name)
    bad_file = edit(data)
    with pytest.raises(UserError) as e:
        load_all(name, data, tmp_path / "cache", **options)
    msg = str(e.value)
    assert isinstance(e.value, DatasetError) and "\n" not in msg, msg
    assert msg.startswith(f"{bad_file}: "), msg
    for fragment in fragments:
        assert fragment in msg, msg


def test_the_pristine_fixtures_pass_every_check(tmp_path, pristine):
    """The table's edits are what fails: each untouched fixture loads."""
    for name in MAKERS:
        assert len(load_all(name, pristine(name), tmp_path / "cache")["video"])


def test_tolerated_values_still_load(tmp_path, pristine):
    """Occluded TAP-Vid points may lie outside the frame (they are never scored); a box may reach
    1 px past the border (then it is clipped); a ScanNet frame whose pose is -inf is left out."""
    tap = shutil.copytree(pristine("tapvid"), tmp_path / "tapvid")
    tapvid_entry(setitem("points", (1, 2), [1.5, -0.3]))(tap)  # track 1 is occluded in frames 0-3
    assert load_all("tapvid", tap, tmp_path / "c1")["occluded"][0, 1, 0]
    vis = shutil.copytree(pristine("video_boxes"), tmp_path / "vis")
    box(0, [7.5, -0.5, 57.4, 49.0])(vis)  # x1 = 64.9, y1 = 48.5: within 1 px of the 64x48 frame
    boxes = load_all("video_boxes", vis, tmp_path / "c2", max_objects=2)["boxes"]
    np.testing.assert_allclose(boxes[0, 0, 0], [0, 0, 32, 32], atol=1e-5)  # clipped to the 32x32 clip


BASE = {"num_frames": 4, "resolution": 32}
OPTION_CASES = [  # (dataset, options, exact message)
    ("kinetics", {"short_clip": "wrap"}, "data.short_clip='wrap': expected one of ['error', 'loop', 'pad']"),
    ("kinetics", {"num_frames": 0}, "data.num_frames=0: expected an integer >= 1"),
    ("kinetics", {"num_frames": "4"}, "data.num_frames='4': expected an integer >= 1"),
    ("kinetics", {"num_frames": True}, "data.num_frames=True: expected an integer >= 1"),
    ("kinetics", {"frame_stride": 0}, "data.frame_stride=0: expected an integer >= 1"),
    ("kinetics", {"frame_stride": 2.5}, "data.frame_stride=2.5: expected an integer >= 1"),
    ("kinetics", {"clips_per_video": 2}, "data.clips_per_video=2: expected 1 without data.frame_stride (more clips "
                                         "per video needs a frame_stride: uniform sampling spans the video)"),
    ("kinetics", {"clips_per_video": 0, "frame_stride": 2}, "data.clips_per_video=0: expected an integer >= 1"),
    ("kinetics", {"resolution": [32]}, "data.resolution=[32]: expected an integer >= 1 or [height, width] of such "
                                       "integers"),
    ("kinetics", {"resolution": True}, "data.resolution=True: expected an integer >= 1 or [height, width] of such "
                                       "integers"),
    ("kinetics", {"resolution": [32, 0]}, "data.resolution=[32, 0]: expected an integer >= 1 or [height, width] of "
                                          "such integers"),
    ("kinetics", {"crop": "left"}, "data.crop='left': expected one of ['center', 'none']"),
    ("kinetics", {"missing_videos": "maybe"}, "data.missing_videos='maybe': expected 'error' or 'skip'"),
    ("kinetics", {"max_clips": 0}, "data.max_clips=0: expected an integer >= 1 or null"),
    ("kinetics", {"partition": {"test": [0.5, 0.2]}}, "data.partition.test=[0.5, 0.2]: expected [lo, hi] with "
                                                      "0 <= lo <= hi <= 1"),
    ("kinetics", {"annotations": {"test": "annotations/validate.csv"}},
     "data.label_csv=None: expected the CSV whose labels define the class ids (e.g. annotations/train.csv)"),
    ("tapvid", {"num_points": 0}, "data.num_points=0: expected an integer >= 1"),
    ("video_boxes", {"max_objects": -1}, "data.max_objects=-1: expected an integer >= 1"),
    ("scannet", {"depth_scale": 0}, "data.depth_scale=0: expected a finite number > 0 (depth PNG units per metre)"),
    ("scannet", {"depth_scale": "mm"}, "data.depth_scale='mm': expected a finite number > 0 (depth PNG units per "
                                       "metre)"),
    ("jhmdb", {"split_number": 0}, "data.split_number=0: expected an integer >= 1"),
    ("jhmdb", {"split": "val"}, "dataset 'jhmdb' has splits ['train', 'test'], not 'val'"),
]


@pytest.mark.parametrize("name,options,message", OPTION_CASES, ids=[f"{c[0]}-{list(c[1])[0]}" for c in OPTION_CASES])
def test_bad_options_are_one_line_user_errors(tmp_path, pristine, name, options, message):
    options = dict(options)
    split = options.pop("split", SPLITS[name])
    with pytest.raises(DatasetError) as e:
        adapter(name)(split=split, root=tmp_path, data_dir=pristine(name), cache=False, **{**BASE, **options})
    assert str(e.value) == message and isinstance(e.value, UserError) and isinstance(e.value, ValueError)


def test_a_box_far_outside_the_frame_stops_the_cli(tmp_path, pristine):
    """The reported case, through ``python -m bench.run``: one ``error:`` line, exit 2, no record."""
    data = shutil.copytree(pristine("video_boxes"), tmp_path / "vis")
    bad = box(3, [200.0, 10.0, 20.0, 20.0])(data)
    code, err = run_here("task=box_tracking", "data=video_boxes", f"data.data_dir={data}", "model=random_t",
                         "data.num_frames=4", "data.resolution=32", f"paths.cache={tmp_path / 'cache'}",
                         f"paths.results={tmp_path / 'results'}", f"hydra.run.dir={tmp_path / 'out'}")
    assert error_line(code, err) == (f"error: {bad}: annotations[0] (id 2): bboxes at frame 3, x0 is 200: "
                                     f"{OUT_OF_FRAME} (2 such values)")
    assert not (tmp_path / "results").exists()
