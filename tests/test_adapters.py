"""Real-dataset adapters on tiny fixtures written in each dataset's exact on-disk format:
shapes, dtypes and values of every provided key, the shipped YAML configs, caching, one
``bench.run`` evaluation end to end, and one-line errors that name the bad file."""
from __future__ import annotations

import builtins
import errno
import importlib
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from omegaconf import OmegaConf

from bench.data.video_io import Resize, sample_indices
from bench.errors import DatasetError, UserError
from bench.registry import DATASETS, TASKS

REPO = Path(__file__).resolve().parents[1]
T, R = 4, 32  # clip frames, clip resolution
SMALL = dict(num_frames=T, resolution=R)
W, H = 64, 48  # fixture frame size (landscape: the centre crop removes 8 px each side)


def frame(i: int, h: int = H, w: int = W) -> np.ndarray:
    """RGB frame whose brightness encodes its index (survives lossy codecs) with a red left band."""
    img = np.full((h, w, 3), (20 + 18 * i) % 256, np.uint8)
    img[:, : w // 8] = (255, 0, 0)
    return img


def write_video(path: Path, n: int, fourcc: str = "mp4v") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10, (W, H))
    assert writer.isOpened(), f"OpenCV cannot write {path.suffix} with {fourcc}"
    for i in range(n):
        writer.write(cv2.cvtColor(frame(i), cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def write_image(path: Path, img: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR) if img.ndim == 3 else img)
    return path


def adapter(name: str):
    """The adapter class, imported directly (the registry would import every bench.data module)."""
    module = importlib.import_module(f"bench.data.{name}")
    return next(obj for obj in vars(module).values() if getattr(obj, "name", None) == name and isinstance(obj, type))


def build(name: str, data_dir: Path, tmp_path: Path, split: str = "train", **cfg):
    return adapter(name)(split=split, root=tmp_path / "cache", data_dir=data_dir, **{**SMALL, **cfg})


def check_error(excinfo, path: Path, *words: str) -> str:
    msg = str(excinfo.value)
    assert str(path) in msg and "\n" not in msg, msg
    for word in words:
        assert word in msg, msg
    return msg


def compose_datasets(task: str, name: str, data_dir: Path, tmp_path: Path, *overrides: str):
    """The (train, test) splits as ``python -m bench.run`` builds them: hydra composes the config
    from the shipped YAML and the command-line overrides, then ``load_datasets`` constructs them."""
    from hydra import compose, initialize_config_dir

    from bench.run import load_datasets  # importing bench.run registers the ConfigStore nodes

    with initialize_config_dir(config_dir=str(REPO / "bench" / "configs"), version_base="1.3"):
        cfg = compose("bench", overrides=[f"task={task}", f"data={name}", f"data.data_dir={data_dir}",
                                          "data.num_frames=4", "data.resolution=32", f"paths.cache={tmp_path / 'cache'}",
                                          *overrides])
    return load_datasets(cfg, TASKS.get(task))


@pytest.fixture
def deny(monkeypatch):
    """``deny(path)`` makes a file or directory unreadable: chmod 000 does it for a normal user; root
    reads through any mode, so opening or listing the path also raises PermissionError (as EACCES would)."""
    denied: dict[Path, int] = {}
    real_open, real_scandir = builtins.open, os.scandir

    def refuse(path) -> None:
        if isinstance(path, (str, os.PathLike)) and Path(path) in denied:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    def fake_open(file, *args, **kwargs):
        refuse(file)
        return real_open(file, *args, **kwargs)

    def fake_scandir(path="."):
        refuse(path)
        return real_scandir(path)

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(os, "scandir", fake_scandir)

    def apply(path: Path) -> Path:
        denied[path] = path.stat().st_mode
        path.chmod(0)
        return path

    yield apply
    for path, mode in reversed(denied.items()):  # last denied first: a directory before a file in it
        path.chmod(mode)


# ---------------------------------------------------------------------------------------------
# fixtures in each dataset's format

K_COLOR = np.array([[50.0, 0, 31.5], [0, 50.0, 23.5], [0, 0, 1]])


def make_scannet(root: Path, frames: int = 8) -> Path:
    scenes = {"scene0000_00": "train", "scene0001_00": "train", "scene0002_00": "test"}
    for s, scene in enumerate(scenes):
        d = root / "scans" / scene
        for i in range(frames):
            write_image(d / "color" / f"{i}.jpg", frame(i))
            depth = np.full((24, 32), 1000 * (i + 1) + 100 * s, np.uint16)
            depth[:4] = 0  # invalid band (top rows: the centre crop keeps every row)
            write_image(d / "depth" / f"{i}.png", depth)
            pose = np.eye(4)
            pose[0, 3] = 0.1 * i
            (d / "pose").mkdir(exist_ok=True)
            np.savetxt(d / "pose" / f"{i}.txt", pose)
        (d / "intrinsic").mkdir()
        k4 = np.eye(4)
        k4[:3, :3] = K_COLOR
        np.savetxt(d / "intrinsic" / "intrinsic_color.txt", k4)
        np.savetxt(d / "intrinsic" / "intrinsic_depth.txt", k4)
    (root / "scannetv2_train.txt").write_text("scene0000_00\nscene0001_00\n")
    (root / "scannetv2_val.txt").write_text("scene0002_00\n")
    return root


def tapvid_entry(t: int = 10, n: int = 3, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    points = rng.uniform(0.3, 0.7, (n, t, 2)).astype(np.float32)
    points[0] = [0.5, 0.25]  # -> pixel (32, 12) -> clip (16, 8)
    points[2] = [0.05, 0.5]  # x = 3.2 px: removed by the centre crop
    occluded = np.zeros((n, t), bool)
    occluded[1, :4] = True  # track 1 first visible at video frame 4
    return {"video": np.stack([frame(i) for i in range(t)]), "points": points, "occluded": occluded}


def make_tapvid(root: Path) -> Path:
    (root / "tapvid_davis").mkdir(parents=True)
    davis = {"bear": tapvid_entry(), "camel": tapvid_entry(seed=1)}
    (root / "tapvid_davis" / "tapvid_davis.pkl").write_bytes(pickle.dumps(davis))
    (root / "tapvid_kinetics").mkdir()
    for part in range(2):
        videos = []
        for v in range(2):
            entry = tapvid_entry(seed=10 * part + v)
            entry["video"] = [cv2.imencode(".jpg", cv2.cvtColor(f, cv2.COLOR_RGB2BGR))[1].tobytes() for f in entry["video"]]
            videos.append(entry)
        (root / "tapvid_kinetics" / f"{part:04d}_of_0002.pkl").write_bytes(pickle.dumps(videos))
    return root


def rot_y(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def make_realestate(root: Path, frames: int = 6) -> Path:
    for split, seqs in {"train": ["aaa", "bbb"], "test": ["ccc"]}.items():
        (root / split).mkdir(parents=True)
        for seq in seqs:
            lines = [f"https://www.youtube.com/watch?v={seq}"]
            for i in range(frames):
                stamp = 1000000 + 33366 * i
                w2c = np.hstack([rot_y(0.1 * i), [[0.5 * i], [0.0], [1.0]]])
                lines.append(" ".join([str(stamp), "0.8", "1.0", "0.5", "0.5", "0", "0"] + [f"{v:.9f}" for v in w2c.ravel()]))
                write_image(root / "frames" / split / seq / f"{stamp}.png", frame(i))
            (root / split / f"{seq}.txt").write_text("\n".join(lines) + "\n")
    return root


SSV2_TEMPLATES = ["Holding something", "Putting something on something", "Pushing something from left to right"]


def make_ssv2(root: Path, ext: str = ".webm", fourcc: str = "VP80") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "labels.json").write_text(json.dumps({t: str(i) for i, t in enumerate(SSV2_TEMPLATES)}))
    train = [{"id": "101", "label": "holding a cup", "template": "Holding [something]", "placeholders": ["a cup"]},
             {"id": "102", "label": "putting a pen on a book", "template": "Putting [something] on [something]",
              "placeholders": ["a pen", "a book"]}]
    val = [{"id": "201", "label": "pushing a box from left to right",
            "template": "Pushing [something] from left to right", "placeholders": ["a box"]}]
    (root / "train.json").write_text(json.dumps(train))
    (root / "validation.json").write_text(json.dumps(val))
    for entry in train + val:
        write_video(root / "20bn-something-something-v2" / f"{entry['id']}{ext}", 12, fourcc)
    return root


def make_kinetics(root: Path) -> Path:
    (root / "annotations").mkdir(parents=True)
    header = "label,youtube_id,time_start,time_end,split\n"
    (root / "annotations" / "train.csv").write_text(
        header + "riding a bike,abc123,10,20,train\nabseiling,def456,0,10,train\nzumba,ghi789,5,15,train\n")
    (root / "annotations" / "validate.csv").write_text(header + "zumba,jkl012,30,40,validate\n")
    write_video(root / "train" / "abc123_000010_000020.mp4", 12)
    write_video(root / "train" / "abseiling" / "def456_000000_000010.mp4", 12)  # per-class folder
    write_video(root / "train" / "zumba" / "ghi789_000005_000015.mp4", 12)
    write_video(root / "val" / "jkl012_000030_000040.mp4", 12)
    return root


def make_video_boxes(root: Path, frames: int = 6) -> Path:
    videos, anns = [], []
    for v in range(3):
        names = [f"vid{v}/{i:05d}.jpg" for i in range(frames)]
        for i, name in enumerate(names):
            write_image(root / "train" / "JPEGImages" / name, frame(i))
        videos.append({"id": v + 1, "file_names": names, "height": H, "width": W, "length": frames})
        # object A: box x=16..40, y=12..36, moving right by 2 px per frame; polygon masks
        boxes = [[16.0 + 2 * i, 12.0, 24.0, 24.0] for i in range(frames)]
        polys = [[[b[0], b[1], b[0] + b[2], b[1], b[0] + b[2], b[1] + b[3], b[0], b[1] + b[3]]] for b in boxes]
        anns.append({"id": 10 * v + 2, "video_id": v + 1, "category_id": 1, "bboxes": boxes, "segmentations": polys,
                     "areas": [576.0] * frames, "iscrowd": 0})
        # object B: absent in frame 0, then a box inside the cropped-away band (x < 8) on frame 2
        bboxes_b = [None] + [[30.0, 30.0, 10.0, 8.0]] * (frames - 1)
        bboxes_b[2] = [0.0, 0.0, 6.0, 6.0]
        anns.append({"id": 10 * v + 1, "video_id": v + 1, "category_id": 2, "bboxes": bboxes_b})
    data = {"videos": videos, "annotations": anns,
            "categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "dog"}]}
    (root / "train").mkdir(parents=True, exist_ok=True)
    (root / "train" / "instances.json").write_text(json.dumps(data))
    return root


def yaml_cfg(name: str, **overrides) -> dict:
    cfg = OmegaConf.load(REPO / "bench" / "configs" / "data" / f"{name}.yaml")
    cfg = OmegaConf.merge(cfg, overrides)
    data = OmegaConf.to_container(cfg, resolve=True)
    assert data.pop("name") == name
    return data


# ---------------------------------------------------------------------------------------------
# the shared helpers


def test_sample_indices_uniform_stride_and_short_clip_policies():
    assert sample_indices(8, 4).tolist() == [0, 2, 5, 7]
    assert sample_indices(100, 4, frame_stride=10).tolist() == [34, 44, 54, 64]  # centred window (span 31)
    assert [sample_indices(100, 4, frame_stride=10, clip_index=c, clips_per_video=3)[0] for c in range(3)] == [0, 34, 69]
    assert sample_indices(3, 5, short_clip="loop").tolist() == [0, 1, 2, 0, 1]
    assert sample_indices(3, 5, short_clip="pad").tolist() == [0, 1, 2, 2, 2]
    with pytest.raises(DatasetError, match=r"^clip\.mp4: has 3 frames, fewer than the 5"):
        sample_indices(3, 5, source="clip.mp4")
    with pytest.raises(DatasetError, match="fewer than the 31"):
        sample_indices(30, 4, frame_stride=10, source="x")
    with pytest.raises(ValueError, match="needs a frame_stride"):
        sample_indices(30, 4, clips_per_video=2)


def test_resize_maps_images_points_boxes_and_intrinsics_consistently():
    r = Resize((48, 64), (32, 32))
    assert r.box == (0, 8, 48, 48) and r.scale == (2 / 3, 2 / 3)
    assert r.image(np.zeros((48, 64, 3), np.uint8)).shape == (32, 32, 3)
    np.testing.assert_allclose(r.points(np.array([32.0, 12.0])), [16.0, 8.0])
    boxes, valid = r.boxes(np.array([[8.0, 0.0, 56.0, 48.0], [0.0, 0.0, 6.0, 6.0]]))
    np.testing.assert_allclose(boxes[0], [0, 0, 32, 32])
    assert valid.tolist() == [True, False]
    k = r.intrinsics(K_COLOR)  # the principal point at the image centre stays at the centre
    np.testing.assert_allclose(k, [[50 * 2 / 3, 0, 15.5], [0, 50 * 2 / 3, 15.5], [0, 0, 1]])
    # a 3D point projects to the same place before and after (pixel i centred on i in K)
    p = np.array([0.3, -0.2, 2.0])
    u0 = (K_COLOR @ p)[:2] / p[2]
    u1 = (k @ p)[:2] / p[2]
    np.testing.assert_allclose(u1, (u0 + 0.5 - [8, 0]) * 2 / 3 - 0.5)
    assert Resize((48, 64), (32, 32), crop="none").box == (0, 0, 48, 64)


def test_every_adapter_is_registered_and_fits_its_task():
    pairs = {"scannet": ["depth", "camera_pose"], "tapvid": ["point_tracking"], "realestate10k": ["camera_pose"],
             "ssv2": ["action"], "kinetics": ["action"], "video_boxes": ["box_tracking"]}
    for name, tasks in pairs.items():
        cls = DATASETS.get(name)
        for task in tasks:
            missing = set(TASKS.get(task).requires) - set(cls.provides)
            assert not missing, (name, task, missing)
        assert OmegaConf.load(REPO / "bench" / "configs" / "data" / f"{name}.yaml").name == name


def test_data_dir_must_be_set(tmp_path):
    with pytest.raises(DatasetError, match="data_dir is not set; pass data.data_dir="):
        adapter("scannet")(split="train", root=tmp_path, data_dir="???")


# ---------------------------------------------------------------------------------------------
# each adapter on its fixture


def test_scannet_depth_intrinsics_and_poses(tmp_path):
    data = make_scannet(tmp_path / "scannet")
    ds = build("scannet", data, tmp_path)
    assert len(ds) == 2 and ds.split == "train" and ds.meta["clip_ids"] == ["scene0000_00", "scene0001_00"]
    a = ds.arrays(ds.provides)
    assert a["video"].shape == (2, T, R, R, 3) and a["video"].dtype == np.uint8
    assert a["depth"].shape == (2, T, R, R) and a["depth"].dtype == np.float32
    assert a["intrinsics"].shape == (2, 3, 3) and a["intrinsics"].dtype == np.float32
    assert a["cam_to_world"].shape == (2, T, 4, 4) and a["cam_to_world"].dtype == np.float32
    idx = np.array([0, 2, 5, 7])  # uniform over 8 frames
    # depth: mm -> m, nearest neighbour (only source values, 0 kept where invalid)
    for j, i in enumerate(idx):
        assert set(np.unique(a["depth"][1, j])) == {0.0, np.float32((1000 * (i + 1) + 100) / 1000)}
    assert (a["depth"][:, :, 0] == 0).all() and (a["depth"][:, :, -1] > 0).all()
    np.testing.assert_allclose(a["cam_to_world"][0, :, 0, 3], 0.1 * idx, atol=1e-6)
    np.testing.assert_allclose(a["intrinsics"][0], [[100 / 3, 0, 15.5], [0, 100 / 3, 15.5], [0, 0, 1]], atol=1e-4)
    brightness = a["video"][0, :, :, -1].mean(axis=(1, 2))  # right edge: no red band after the crop
    np.testing.assert_allclose(brightness, 20 + 18 * idx, atol=4)
    clip = ds[1]
    assert set(clip) == set(ds.provides) and clip["depth"].shape == (T, R, R)
    test = build("scannet", data, tmp_path, split="test")
    assert len(test) == 1 and test.fingerprint != ds.fingerprint


def test_scannet_skips_frames_with_invalid_poses(tmp_path):
    data = make_scannet(tmp_path / "scannet")
    np.savetxt(data / "scans" / "scene0002_00" / "pose" / "0.txt", np.full((4, 4), -np.inf))
    clip = build("scannet", data, tmp_path, split="test", cache=False)[0]
    assert np.isfinite(clip["cam_to_world"]).all()
    np.testing.assert_allclose(clip["cam_to_world"][:, 0, 3], 0.1 * np.array([1, 3, 5, 7]), atol=1e-6)
    with pytest.raises(DatasetError) as e:
        build("scannet", data, tmp_path, split="test", skip_invalid_poses=False)[0]
    check_error(e, data / "scans" / "scene0002_00" / "pose" / "0.txt", "not finite")


def test_tapvid_davis_points_queries_and_occlusion(tmp_path):
    data = make_tapvid(tmp_path / "tapvid")
    ds = build("tapvid", data, tmp_path, split="test", num_points=5, frame_stride=2)  # frames 1,3,5,7
    a = ds.arrays(ds.provides)
    assert len(ds) == 2 and ds.meta["clip_ids"] == ["tapvid_davis/bear", "tapvid_davis/camel"]
    assert a["video"].shape == (2, T, R, R, 3) and a["video"].dtype == np.uint8
    assert a["query_points"].shape == (2, 5, 3) and a["query_points"].dtype == np.float32
    assert a["target_points"].shape == (2, 5, T, 2) and a["target_points"].dtype == np.float32
    assert a["occluded"].shape == (2, 5, T) and a["occluded"].dtype == bool
    assert a["track_object"].shape == (2, 5) and a["track_object"].dtype == np.int32 and not a["track_object"].any()
    # tracks kept: the two visible ones (0, 1) in order, then the cropped-away one (2), then 2 pads
    np.testing.assert_allclose(a["target_points"][0, 0], [[16.0, 8.0]] * T, atol=1e-5)  # (0.5, 0.25) normalised
    occ = a["occluded"][0]
    assert not occ[0].any() and occ[1].tolist() == [True, True, False, False]  # visible from video frame 4 on
    assert occ[2].all() and occ[3:].all()  # x = 3.2 px is outside the crop; padding never visible
    np.testing.assert_allclose(a["query_points"][0, 0], [0, 8, 16], atol=1e-5)  # (t, y, x) at the first frame
    assert a["query_points"][0, 1, 0] == 2  # first visible clip frame of track 1
    np.testing.assert_allclose(a["query_points"][0, 1, 1:], a["target_points"][0, 1, 2, ::-1])


def test_tapvid_kinetics_jpeg_frames_and_glob(tmp_path):
    data = make_tapvid(tmp_path / "tapvid")
    ds = build("tapvid", data, tmp_path, split="train", num_points=2)
    assert len(ds) == 4 and ds.meta["clip_ids"][0] == "0000_of_0002/0"
    a = ds.arrays(["video", "target_points", "occluded"])
    assert a["video"].shape == (4, T, R, R, 3) and a["target_points"].shape == (4, 2, T, 2)
    np.testing.assert_allclose(a["video"][0, :, :, -1].mean(axis=(1, 2)), 20 + 18 * np.array([0, 3, 6, 9]), atol=4)


def test_realestate10k_inverts_world_to_camera(tmp_path):
    data = make_realestate(tmp_path / "re10k")
    ds = build("realestate10k", data, tmp_path)
    a = ds.arrays(ds.provides)
    assert len(ds) == 2 and a["video"].shape == (2, T, R, R, 3)
    assert a["cam_to_world"].shape == (2, T, 4, 4) and a["cam_to_world"].dtype == np.float32
    assert a["intrinsics"].shape == (2, 3, 3) and a["intrinsics"].dtype == np.float32
    idx = np.array([0, 2, 3, 5])  # uniform over 6 frames
    for j, i in enumerate(idx):
        w2c = np.vstack([np.hstack([rot_y(0.1 * i), [[0.5 * i], [0.0], [1.0]]]), [0, 0, 0, 1]])
        np.testing.assert_allclose(a["cam_to_world"][0, j] @ w2c, np.eye(4), atol=1e-5)
        np.testing.assert_allclose(a["cam_to_world"][0, j, :3, 3], -rot_y(0.1 * i).T @ [0.5 * i, 0, 1], atol=1e-5)
    # normalised (fx, fy, cx, cy) = (0.8, 1.0, 0.5, 0.5) of a 64x48 frame, cropped to 48x48, resized to 32
    k = np.array([[0.8 * W, 0, 0.5 * W], [0, 1.0 * H, 0.5 * H], [0, 0, 1]])
    np.testing.assert_allclose(a["intrinsics"][0], Resize((H, W), (R, R)).intrinsics(k), atol=1e-4)
    np.testing.assert_allclose(a["intrinsics"][0, 0, 0], 0.8 * W * 2 / 3, atol=1e-4)


@pytest.mark.parametrize("ext,fourcc", [(".webm", "VP80"), (".mp4", "mp4v")])
def test_ssv2_labels_from_templates(tmp_path, ext, fourcc):
    data = make_ssv2(tmp_path / "ssv2", ext, fourcc)
    ds = build("ssv2", data, tmp_path, video_ext=ext)
    a = ds.arrays(ds.provides)
    assert ds.meta["label_names"] == SSV2_TEMPLATES
    assert a["video"].shape == (2, T, R, R, 3) and a["video"].dtype == np.uint8
    assert a["label"].tolist() == [0, 1] and a["label"].dtype == np.int64
    idx = np.array([0, 4, 7, 11])
    np.testing.assert_allclose(a["video"][0, :, :, -1].mean(axis=(1, 2)), 20 + 18 * idx, atol=6)
    assert build("ssv2", data, tmp_path, split="test", video_ext=ext).arrays(["label"])["label"].tolist() == [2]


def test_kinetics_labels_layouts_and_missing_videos(tmp_path):
    data = make_kinetics(tmp_path / "kinetics")
    ds = build("kinetics", data, tmp_path)
    assert ds.meta["label_names"] == ["abseiling", "riding a bike", "zumba"]
    a = ds.arrays(ds.provides)
    assert a["video"].shape == (3, T, R, R, 3) and a["label"].tolist() == [1, 0, 2]  # sorted by file name
    os.remove(data / "val" / "jkl012_000030_000040.mp4")
    with pytest.raises(DatasetError) as e:
        build("kinetics", data, tmp_path, split="test")
    check_error(e, data / "val" / "jkl012_000030_000040.mp4", "not found", "missing_videos=skip")
    with open(data / "annotations" / "validate.csv", "a") as fh:
        fh.write("zumba,mno345,0,10,validate\n")
    write_video(data / "val" / "mno345_000000_000010.mp4", 12)
    with pytest.warns(RuntimeWarning, match="left out 1 clip"):
        test = build("kinetics", data, tmp_path, split="test", missing_videos="skip")
    assert len(test) == 1 and test.arrays(["label"])["label"].tolist() == [2]


def test_video_boxes_xywh_to_resized_xyxy_and_masks(tmp_path):
    from pycocotools import mask as mask_utils

    data = make_video_boxes(tmp_path / "vis")
    ds = build("video_boxes", data, tmp_path, max_objects=3)  # default: 80% / 20% of the train videos
    test = build("video_boxes", data, tmp_path, split="test", max_objects=3)
    assert ds.meta["clip_ids"] == ["1", "2"] and test.meta["clip_ids"] == ["3"]
    assert ds.meta["categories"] == {1: "person", 2: "dog"}
    a = ds.arrays(ds.provides)
    assert a["video"].shape == (2, T, R, R, 3)
    assert a["boxes"].shape == (2, 3, T, 4) and a["boxes"].dtype == np.float32
    assert a["box_valid"].shape == (2, 3, T) and a["box_valid"].dtype == bool
    assert a["masks"].shape == (2, 3, T) and a["masks"].dtype == object
    idx = np.array([0, 2, 3, 5])  # uniform over 6 frames
    s = 2 / 3  # 48x48 centre crop (x0 = 8) resized to 32
    # object A (visible in frame 0) comes first although its id is larger
    expect = np.stack([(16 + 2 * idx - 8) * s, 12 * s + 0 * idx, (40 + 2 * idx - 8) * s, 36 * s + 0 * idx], 1)
    np.testing.assert_allclose(a["boxes"][0, 0], expect, atol=1e-4)
    assert a["box_valid"][0, 0].all()
    # object B: missing in frame 0, cropped away in frame 2, visible after
    assert a["box_valid"][0, 1].tolist() == [False, False, True, True]
    np.testing.assert_allclose(a["boxes"][0, 1, 2], [(30 - 8) * s, 30 * s, (40 - 8) * s, 38 * s], atol=1e-4)
    assert not a["box_valid"][0, 2].any() and not a["boxes"][0, 2].any()  # padding
    rle = a["masks"][0, 0, 1]
    assert rle["size"] == [R, R] and isinstance(rle["counts"], str)
    assert abs(float(mask_utils.area(rle)) - (24 * s) ** 2) < 40
    x0, y0, bw, bh = mask_utils.toBbox(rle)
    np.testing.assert_allclose([x0, y0, x0 + bw, y0 + bh], a["boxes"][0, 0, 1], atol=1.5)
    assert a["masks"][0, 1, 2] is None and a["masks"][0, 2, 0] is None  # no segmentation / padding
    again = build("video_boxes", data, tmp_path, max_objects=3)
    assert again.fingerprint == ds.fingerprint
    assert again.arrays(["masks"])["masks"][0, 0, 1] == rle  # from the cache on disk


@pytest.mark.parametrize("name,make,split", [
    ("scannet", make_scannet, "train"), ("tapvid", make_tapvid, "test"), ("realestate10k", make_realestate, "train"),
    ("ssv2", make_ssv2, "test"), ("kinetics", make_kinetics, "test"), ("video_boxes", make_video_boxes, "test")])
def test_shipped_yaml_configs_build(tmp_path, name, make, split):
    data = make(tmp_path / name)
    overrides = {"data_dir": str(data), **SMALL}
    if name == "scannet":
        overrides["frame_stride"] = 2  # the shipped stride of 10 needs longer scenes than the fixture's
    ds = adapter(name)(split=split, root=tmp_path / "cache", **yaml_cfg(name, **overrides))
    clip = ds[0]
    assert set(clip) == set(ds.provides) and clip["video"].shape == (T, R, R, 3)


def test_cache_fingerprint_follows_files_and_config(tmp_path):
    data = make_ssv2(tmp_path / "ssv2", ".mp4", "mp4v")
    ds = build("ssv2", data, tmp_path, video_ext=".mp4")
    first = ds.arrays(["video"])["video"]
    assert isinstance(first, np.memmap)
    entry = tmp_path / "cache" / "adapters" / "ssv2" / ds.fingerprint
    assert (entry / "complete.json").exists() and (entry / "video.npy").exists()
    assert build("ssv2", data, tmp_path, video_ext=".mp4").fingerprint == ds.fingerprint
    assert build("ssv2", data, tmp_path, video_ext=".mp4", resolution=16).fingerprint != ds.fingerprint
    mem = build("ssv2", data, tmp_path / "nocache", video_ext=".mp4", cache=False)
    np.testing.assert_array_equal(mem.arrays(["video"])["video"], first)
    assert not (tmp_path / "nocache").exists()
    write_video(data / "20bn-something-something-v2" / "101.mp4", 16)  # the data changed
    os.utime(data / "20bn-something-something-v2" / "101.mp4", ns=(1, 1))
    assert build("ssv2", data, tmp_path, video_ext=".mp4").fingerprint != ds.fingerprint


# ---------------------------------------------------------------------------------------------
# bad files: one line naming the file


@pytest.fixture
def kinetics_data(tmp_path):
    return make_kinetics(tmp_path / "kinetics")


def video_of(data: Path) -> Path:
    return data / "val" / "jkl012_000030_000040.mp4"


def test_zero_byte_video(tmp_path, kinetics_data):
    video_of(kinetics_data).write_bytes(b"")
    with pytest.raises(DatasetError) as e:
        build("kinetics", kinetics_data, tmp_path, split="test").arrays(["video"])
    check_error(e, video_of(kinetics_data), "empty (0 bytes)")


def test_a_bad_video_found_while_caching_leaves_no_entry(tmp_path, kinetics_data):
    """The last clip of the split fails after the first two were written: the error is the video's
    own, and neither a half-written entry nor its temp directory is left."""
    bad = kinetics_data / "train" / "zumba" / "ghi789_000005_000015.mp4"
    bad.write_bytes(b"")
    with pytest.raises(DatasetError) as e:
        build("kinetics", kinetics_data, tmp_path).arrays(["video"])
    assert str(e.value) == f"{bad}: video is empty (0 bytes)"
    assert list((tmp_path / "cache" / "adapters" / "kinetics").iterdir()) == []


def test_corrupt_video(tmp_path, kinetics_data):
    video_of(kinetics_data).write_bytes(np.random.default_rng(0).bytes(4000))
    with pytest.raises(DatasetError) as e:
        build("kinetics", kinetics_data, tmp_path, split="test").arrays(["video"])
    check_error(e, video_of(kinetics_data), "cannot open video")


def test_video_that_opens_but_fails_to_decode(tmp_path, kinetics_data):
    path = video_of(kinetics_data)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (W, H))
    rng = np.random.default_rng(0)
    for _ in range(30):
        writer.write(rng.integers(0, 256, (H, W, 3), dtype=np.uint8))
    writer.release()
    data = bytearray(path.read_bytes())
    data[len(data) // 4:len(data) // 4 + 16000] = rng.bytes(16000)  # damage frames, keep the container
    path.write_bytes(bytes(data))
    with pytest.raises(DatasetError) as e:
        build("kinetics", kinetics_data, tmp_path, split="test").arrays(["video"])
    msg = check_error(e, path, "corrupt video: decoding frames [0, 10, 19, 29] failed (Check failed")
    assert "github/workspace" not in msg and "threaded_decoder" not in msg


def test_truncated_mp4(tmp_path, kinetics_data):
    full = video_of(kinetics_data).read_bytes()
    video_of(kinetics_data).write_bytes(full[: len(full) // 2])
    with pytest.raises(DatasetError) as e:
        build("kinetics", kinetics_data, tmp_path, split="test")[0]
    check_error(e, video_of(kinetics_data), "truncated")


def test_truncated_webm_is_detected_against_the_declared_length(tmp_path):
    data = make_ssv2(tmp_path / "ssv2")
    video = data / "20bn-something-something-v2" / "201.webm"
    write_video(video, 40, "VP80")
    full = video.read_bytes()
    video.write_bytes(full[: len(full) // 2])  # still opens: the first frames decode
    with pytest.raises(DatasetError) as e:
        build("ssv2", data, tmp_path, split="test")[0]
    check_error(e, video, "truncated or corrupt video: the container declares 40 frames")
    lenient = build("ssv2", data, tmp_path, split="test", check_truncation=False, cache=False)
    assert lenient[0]["video"].shape == (T, R, R, 3)  # the frames that do decode


def test_short_video_error_loop_and_pad(tmp_path, kinetics_data):
    write_video(video_of(kinetics_data), 3)
    with pytest.raises(DatasetError) as e:
        build("kinetics", kinetics_data, tmp_path, split="test")[0]
    check_error(e, video_of(kinetics_data), "has 3 frames, fewer than the 4")
    looped = build("kinetics", kinetics_data, tmp_path, split="test", short_clip="loop", cache=False)[0]["video"]
    padded = build("kinetics", kinetics_data, tmp_path, split="test", short_clip="pad", cache=False)[0]["video"]
    np.testing.assert_array_equal(looped[3], looped[0])
    np.testing.assert_array_equal(padded[3], padded[2])


def test_truncated_and_zero_byte_frames(tmp_path):
    data = make_scannet(tmp_path / "scannet")
    jpg = data / "scans" / "scene0002_00" / "color" / "7.jpg"
    jpg.write_bytes(jpg.read_bytes()[:300])
    with pytest.raises(DatasetError) as e:
        build("scannet", data, tmp_path, split="test")[0]
    check_error(e, jpg, "truncated JPEG")
    png = data / "scans" / "scene0002_00" / "depth" / "0.png"
    png.write_bytes(b"")
    with pytest.raises(DatasetError) as e:
        build("scannet", data, tmp_path, split="test")[0]
    check_error(e, png, "empty (0 bytes)")


def test_scannet_bad_pose_shape_and_missing_depth(tmp_path):
    data = make_scannet(tmp_path / "scannet")
    pose = data / "scans" / "scene0002_00" / "pose" / "3.txt"
    np.savetxt(pose, np.eye(3))
    with pytest.raises(DatasetError) as e:
        build("scannet", data, tmp_path, split="test")[0]
    check_error(e, pose, "expected a 4x4 matrix")
    np.savetxt(pose, np.eye(4))
    depth = data / "scans" / "scene0002_00" / "depth" / "5.png"
    depth.unlink()
    with pytest.raises(DatasetError) as e:
        build("scannet", data, tmp_path, split="test")[0]
    check_error(e, depth, "not found")
    write_image(depth, frame(0))  # an 8-bit colour image where 16-bit depth belongs
    with pytest.raises(DatasetError) as e:
        build("scannet", data, tmp_path, split="test")[0]
    check_error(e, depth, "16-bit PNG")


def test_missing_annotation_fields(tmp_path):
    ssv2 = make_ssv2(tmp_path / "ssv2", ".mp4", "mp4v")
    (ssv2 / "validation.json").write_text(json.dumps([{"id": "201", "label": "x"}]))
    with pytest.raises(DatasetError) as e:
        build("ssv2", ssv2, tmp_path, split="test", video_ext=".mp4")
    check_error(e, ssv2 / "validation.json", "entry 0: missing field(s) ['template']")

    kin = make_kinetics(tmp_path / "kinetics")
    (kin / "annotations" / "validate.csv").write_text("label,youtube_id,time_start\nzumba,jkl012,30\n")
    with pytest.raises(DatasetError) as e:
        build("kinetics", kin, tmp_path, split="test")
    check_error(e, kin / "annotations" / "validate.csv", "missing column(s) ['time_end']")

    vis = make_video_boxes(tmp_path / "vis")
    ann = vis / "train" / "instances.json"
    doc = json.loads(ann.read_text())
    del doc["annotations"][3]["bboxes"]
    ann.write_text(json.dumps(doc))
    with pytest.raises(DatasetError) as e:
        build("video_boxes", vis, tmp_path)
    check_error(e, ann, "annotations[3]: missing field(s) ['bboxes']")
    ann.write_text(json.dumps({"videos": []}))
    with pytest.raises(DatasetError) as e:
        build("video_boxes", vis, tmp_path)
    check_error(e, ann, "missing top-level field(s) ['annotations', 'categories']")

    tap = make_tapvid(tmp_path / "tapvid")
    pkl = tap / "tapvid_davis" / "tapvid_davis.pkl"
    entry = tapvid_entry()
    del entry["occluded"]
    pkl.write_bytes(pickle.dumps({"bear": entry}))
    with pytest.raises(DatasetError) as e:
        build("tapvid", tap, tmp_path, split="test")
    check_error(e, pkl, "video 'bear': missing field(s) ['occluded']")


def test_wrong_annotation_shapes(tmp_path):
    tap = make_tapvid(tmp_path / "tapvid")
    pkl = tap / "tapvid_davis" / "tapvid_davis.pkl"
    entry = tapvid_entry()
    entry["points"] = entry["points"][..., :1]
    pkl.write_bytes(pickle.dumps({"bear": entry}))
    with pytest.raises(DatasetError) as e:
        build("tapvid", tap, tmp_path, split="test")
    check_error(e, pkl, "'points' has shape (3, 10, 1), expected [N, 10, 2]")

    vis = make_video_boxes(tmp_path / "vis")
    ann = vis / "train" / "instances.json"
    doc = json.loads(ann.read_text())
    doc["annotations"][0]["bboxes"] = doc["annotations"][0]["bboxes"][:-1]
    ann.write_text(json.dumps(doc))
    with pytest.raises(DatasetError) as e:
        build("video_boxes", vis, tmp_path)
    check_error(e, ann, "'bboxes' must be a list with one entry per frame (6), found 5")
    doc["annotations"][0]["bboxes"] = [[1, 2, 3]] * 6
    ann.write_text(json.dumps(doc))
    with pytest.raises(DatasetError) as e:
        build("video_boxes", vis, tmp_path)
    check_error(e, ann, "bboxes[0] must be [x, y, w, h] or null")

    re10k = make_realestate(tmp_path / "re10k")
    txt = re10k / "test" / "ccc.txt"
    txt.write_text(txt.read_text().replace(" 0 0 ", " 0 ", 1))
    with pytest.raises(DatasetError) as e:
        build("realestate10k", re10k, tmp_path, split="test")[0]
    check_error(e, txt, "line 2: 18 fields, expected 19")


def test_malformed_and_empty_annotation_files(tmp_path):
    ssv2 = make_ssv2(tmp_path / "ssv2", ".mp4", "mp4v")
    (ssv2 / "labels.json").write_text('{"Holding something": "0",')
    with pytest.raises(DatasetError) as e:
        build("ssv2", ssv2, tmp_path, video_ext=".mp4")
    check_error(e, ssv2 / "labels.json", "not valid JSON")
    (ssv2 / "labels.json").write_text("")
    with pytest.raises(DatasetError) as e:
        build("ssv2", ssv2, tmp_path, video_ext=".mp4")
    check_error(e, ssv2 / "labels.json", "empty (0 bytes)")
    tap = make_tapvid(tmp_path / "tapvid")
    pkl = tap / "tapvid_davis" / "tapvid_davis.pkl"
    pkl.write_bytes(pkl.read_bytes()[:500])
    with pytest.raises(DatasetError) as e:
        build("tapvid", tap, tmp_path, split="test")
    check_error(e, pkl, "corrupt or truncated pickle")


TAPVID_ENTRY_CASES = [  # (field, its bad value given the good entry, the message after "<file>: video 'bear': ")
    ("points", lambda e: (e["points"] * 64).astype(np.int64), "'points' has dtype int64: expected floats in [0, 1]"),
    ("video", lambda e: True,
     "'video' has type bool: expected uint8 frames [T, H, W, 3] or a list of JPEG-encoded frames"),
    ("points", lambda e: e["points"][:, 0, 0], "'points' has shape (3,), expected [N, 10, 2] for 10 frames"),
    ("occluded", lambda e: np.zeros((3, 12), bool),  # occlusion flags for frames the video does not have
     "'occluded' has shape (3, 12), expected (3, 10) (one flag per track of 'points' and frame of 'video')"),
    ("points", lambda e: [[[0.5, 0.5]] * 10, [[0.5]] * 10],
     "'points' is a ragged nested list (rows of different lengths): expected floats [N, 10, 2]"),
    ("occluded", lambda e: [[False] * 10, [False] * 9, [False] * 10],
     "'occluded' is a ragged nested list (rows of different lengths): expected booleans [N, 10]"),
    ("video", lambda e: [], "'video' has no frames: expected one JPEG-encoded frame per time step"),
]


@pytest.mark.parametrize("field,bad,message", TAPVID_ENTRY_CASES,
                         ids=["int-points", "bool-video", "1d-points", "occluded-shape", "ragged-points",
                              "ragged-occluded", "no-frames"])
def test_malformed_tapvid_entries_name_the_file_entry_and_field(tmp_path, field, bad, message):
    tap = make_tapvid(tmp_path / "tapvid")
    pkl = tap / "tapvid_davis" / "tapvid_davis.pkl"
    entry = tapvid_entry()
    entry[field] = bad(entry)
    pkl.write_bytes(pickle.dumps({"bear": entry, "camel": tapvid_entry(seed=1)}))
    with pytest.raises(DatasetError) as e:
        build("tapvid", tap, tmp_path, split="test")
    assert str(e.value) == f"{pkl}: video 'bear': {message}"


# ---------------------------------------------------------------------------------------------
# data.partition given on the command line

DAVIS_ONLY = "data.pickles={train:tapvid_davis/tapvid_davis.pkl,test:tapvid_davis/tapvid_davis.pkl}"


@pytest.mark.parametrize("partition", ["data.partition={train:[0,0.5],test:[0.5,1]}",
                                       "++data.partition={train:[0,0.5],test:[0.5,1]}"])
def test_tapvid_davis_only_partition_recipe_through_hydra(tmp_path, partition):
    """docs/datasets.md's DAVIS-only TAP-Vid split: both splits read one pickle, halves of its videos."""
    tap = make_tapvid(tmp_path / "tapvid")
    names = ["bear", "camel", "dog", "goat"]
    (tap / "tapvid_davis" / "tapvid_davis.pkl").write_bytes(
        pickle.dumps({name: tapvid_entry(seed=i) for i, name in enumerate(names)}))
    train, test = compose_datasets("point_tracking", "tapvid", tap, tmp_path, DAVIS_ONLY, partition)
    assert train.meta["clip_ids"] == ["tapvid_davis/bear", "tapvid_davis/camel"]
    assert test.meta["clip_ids"] == ["tapvid_davis/dog", "tapvid_davis/goat"]
    assert train[0]["video"].shape == (4, 32, 32, 3)


def test_kinetics_partition_through_hydra(tmp_path, kinetics_data):
    train, test = compose_datasets("action", "kinetics", kinetics_data, tmp_path,
                                   "data.partition={train:[0,0.5],test:[0,1]}")
    assert train.meta["clip_ids"] == ["abc123_000010_000020", "def456_000000_000010"]  # round(0.5 * 3) = 2 of 3
    assert test.meta["clip_ids"] == ["jkl012_000030_000040"]


BAD_PARTITIONS = [  # (value of data.partition=, message)
    ("{train:[0,0.5],val:[0.5,1]}", "data.partition.val=[0.5, 1]: expected a split of dataset 'tapvid' (it has "
                                    "['test', 'train'])"),
    ("{train:[0,1.5],test:[0.5,1]}", "data.partition.train=[0, 1.5]: expected [lo, hi] with 0 <= lo <= hi <= 1"),
    ("{train:[-0.5,0.5],test:[0.5,1]}", "data.partition.train=[-0.5, 0.5]: expected [lo, hi] with 0 <= lo <= hi <= 1"),
    ("{train:[0,0.5],test:[0.6,0.5]}", "data.partition.test=[0.6, 0.5]: expected [lo, hi] with 0 <= lo <= hi <= 1"),
    ("{train:[0.5,0.5],test:[0.5,1]}", "data.partition.train=[0.5, 0.5]: expected lo < hi (an empty range keeps no "
                                       "video)"),
    ("{train:[0,0.5,1],test:[0.5,1]}", "data.partition.train=[0, 0.5, 1]: expected [lo, hi] with 0 <= lo <= hi <= 1"),
    ("{train:0.5,test:[0.5,1]}", "data.partition.train=0.5: expected [lo, hi] with 0 <= lo <= hi <= 1"),
    ("{train:[a,0.5],test:[0.5,1]}", "data.partition.train=['a', 0.5]: expected [lo, hi] with 0 <= lo <= hi <= 1"),
    ("[0,0.5]", "data.partition=[0, 0.5]: expected {split: [lo, hi], ...} of fractions of the sorted videos, e.g. "
                "{train: [0, 0.5], test: [0.5, 1]}"),
    ("{train:[0,0.5]}", "dataset 'tapvid': no split 'test' in its partition config (has ['train'])"),
]


@pytest.mark.parametrize("partition,message", BAD_PARTITIONS, ids=[c[0] for c in BAD_PARTITIONS])
def test_malformed_partitions_are_one_line_errors(tmp_path, partition, message):
    tap = make_tapvid(tmp_path / "tapvid")
    with pytest.raises(UserError) as e:
        compose_datasets("point_tracking", "tapvid", tap, tmp_path, f"data.partition={partition}")
    assert str(e.value) == message and isinstance(e.value, DatasetError)


# ---------------------------------------------------------------------------------------------
# files and directories this process may not read


def test_unreadable_video_file_and_videos_directory(tmp_path, kinetics_data, deny):
    video = deny(video_of(kinetics_data))
    with pytest.raises(DatasetError) as e:
        build("kinetics", kinetics_data, tmp_path, split="test")[0]
    assert str(e.value) == f"{video}: video cannot be read (permission denied)"
    videos_dir = deny(kinetics_data / "val")
    with pytest.raises(DatasetError) as e:
        build("kinetics", kinetics_data, tmp_path, split="test")
    assert str(e.value) == f"{videos_dir}: videos directory cannot be read (permission denied)"


# ---------------------------------------------------------------------------------------------
# end to end through the harness


def test_depth_on_scannet_end_to_end(tmp_path):
    data = make_scannet(tmp_path / "scannet")
    args = [sys.executable, "-m", "bench.run", "task=depth", "data=scannet", f"data.data_dir={data}",
            "data.num_frames=4", "data.resolution=32", "data.frame_stride=2", "model=random_t",
            "readout.epochs=1", "readout.batch_size=2", "visualize=false",
            f"paths.cache={tmp_path / 'cache'}", f"paths.results={tmp_path / 'results'}",
            f"paths.checkpoints={tmp_path / 'ckpt'}", f"hydra.run.dir={tmp_path / 'out'}"]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((tmp_path / "results" / "depth__scannet__random_t__attentive__seed0.json").read_text())
    assert record["dataset"] == "scannet" and set(record["metrics"]) == {"abs_rel", "delta1", "rmse"}
    assert all(np.isfinite(v) for v in record["metrics"].values())
    assert list((tmp_path / "cache" / "adapters" / "scannet").iterdir())  # decoded clips were cached

    bad = [a if not a.startswith("data.data_dir=") else f"data.data_dir={tmp_path / 'nope'}" for a in args]
    proc = subprocess.run(bad, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == f"error: {tmp_path / 'nope'}: data_dir not found"
