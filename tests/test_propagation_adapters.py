"""DAVIS-2017, VIP and JHMDB adapters on fixture trees in each dataset's layout: shapes, values,
resizing, the shipped YAML configs, and one-line errors that name the bad file."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image
from scipy.io import savemat

from bench.errors import DatasetError
from bench.data.davis import Davis
from bench.data.jhmdb import JHMDB
from bench.data.vip import VIP
from bench.registry import DATASETS, TASKS
from tests.test_adapters import deny  # noqa: F401 (a fixture)

REPO = Path(__file__).resolve().parents[1]
H, W, FRAMES = 48, 64, 5  # fixture frames (landscape: the centre crop removes 8 px each side)
SMALL = dict(num_frames=4, resolution=32)


def write_frame(path: Path, i: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((H, W, 3), 20 * i, np.uint8))


def write_ids(path: Path, ids: np.ndarray, mode: str = "P") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(ids.astype(np.uint8), mode="L")
    if mode == "P":
        img = img.convert("P")
        img.putpalette([v for i in range(256) for v in (i, 255 - i, 0)])
    img.save(path)


def ids(i: int) -> np.ndarray:
    out = np.zeros((H, W), np.uint8)
    out[10:30, 20 + i:40 + i] = 1  # object 1 moves right by 1 px a frame
    out[0:4, :] = 255  # void
    return out


def make_masks(root: Path, lists: dict[str, str], frames_dir: str, masks_dir: str, mode: str) -> Path:
    for split, (list_file, seqs) in zip(("train", "val"), lists.items()):
        (root / list_file).parent.mkdir(parents=True, exist_ok=True)
        (root / list_file).write_text("\n".join(seqs.split()) + "\n")
        for seq in seqs.split():
            for i in range(FRAMES):
                write_frame(root / frames_dir / seq / f"{i:05d}.jpg", i)
                write_ids(root / masks_dir / seq / f"{i:05d}.png", ids(i), mode)
    return root


def make_davis(root: Path) -> Path:
    return make_masks(root, {"ImageSets/2017/train.txt": "bear", "ImageSets/2017/val.txt": "goat camel"},
                      "JPEGImages/480p", "Annotations/480p", "P")


def make_vip(root: Path) -> Path:
    return make_masks(root, {"lists/train_videos.txt": "v1", "lists/val_videos.txt": "v2"},
                      "Images", "Annotations/Category_ids", "L")


def make_jhmdb(root: Path) -> Path:
    (root / "splits").mkdir(parents=True)
    (root / "splits" / "run_test_split1.txt").write_text("a.avi 1\nb.avi 2\n")
    for video in ("a", "b"):
        for i in range(FRAMES):
            write_frame(root / "Rename_Images" / "run" / video / f"{i + 1:05d}.png", i)
        pos = np.zeros((2, 15, FRAMES))
        pos[0], pos[1] = 33.5, 24.5  # MATLAB (33.5, 24.5) -> continuous (33, 24) -> crop -8 -> ×2/3
        pos[0, 1] = 3.0  # joint 1 at x = 2.5: cropped away -> occluded
        (root / "joint_positions" / "run" / video).mkdir(parents=True)
        savemat(root / "joint_positions" / "run" / video / "joint_positions.mat", {"pos_img": pos})
    return root


@pytest.mark.parametrize("cls, make", [(Davis, make_davis), (VIP, make_vip)])
def test_mask_adapters_read_ids_resized_with_nearest(tmp_path, cls, make):
    data = make(tmp_path / cls.name)
    test = cls(split="test", root=tmp_path / "cache", data_dir=data, **SMALL)
    arrays = test.arrays(["video", "segmentation"])
    assert len(test) == (2 if cls is Davis else 1)
    assert arrays["video"].shape[1:] == (4, 32, 32, 3) and arrays["segmentation"].shape[1:] == (4, 32, 32)
    seg = arrays["segmentation"][0]
    assert set(np.unique(seg)) == {0, 1}  # void read as background
    assert seg[0, 7:20, 9:21].all() and not seg[0, :6].any()  # rows 10:30, cols 20:40 -> crop -8 -> ×2/3
    assert OmegaConf.load(REPO / "bench" / "configs" / "data" / f"{cls.name}.yaml").name == cls.name
    assert DATASETS.get(cls.name) is cls and set(TASKS.get("mask_propagation").requires) <= set(cls.provides)


def test_jhmdb_joints_split_and_occlusion(tmp_path):
    data = make_jhmdb(tmp_path / "jhmdb")
    train, test = (JHMDB(split=s, root=tmp_path / "cache", data_dir=data, **SMALL) for s in ("train", "test"))
    assert [it.key for it in train.items] == ["run/a"] and [it.key for it in test.items] == ["run/b"]
    arrays = test.arrays(["video", "target_points", "occluded"])
    assert arrays["target_points"].shape[1:] == (15, 4, 2)
    np.testing.assert_allclose(arrays["target_points"][0, 0], [[50 / 3, 16.0]] * 4, rtol=1e-6)
    assert arrays["occluded"][0, 1].all() and not arrays["occluded"][0, 0].any()
    assert OmegaConf.load(REPO / "bench" / "configs" / "data" / "jhmdb.yaml").name == "jhmdb"
    assert set(TASKS.get("keypoint_propagation").requires) <= set(JHMDB.provides)


def test_errors_name_the_bad_file(tmp_path):
    data = make_davis(tmp_path / "davis")
    rgb = data / "Annotations/480p/goat/00003.png"  # a sampled frame (0, 1, 3, 4 of 5)
    cv2.imwrite(str(rgb), np.zeros((H, W, 3), np.uint8) + 7)
    with pytest.raises(DatasetError, match="expected a palette") as err:
        Davis(split="test", root=tmp_path / "cache", data_dir=data, **SMALL).arrays(["segmentation"])
    assert str(rgb) in str(err.value) and "\n" not in str(err.value)
    (data / "JPEGImages/480p/camel/00003.jpg").unlink()
    with pytest.raises(DatasetError, match="have no frame"):
        Davis(split="test", root=tmp_path / "c2", data_dir=data, **SMALL).arrays(["segmentation"])

    jhmdb = make_jhmdb(tmp_path / "jhmdb")
    mat = jhmdb / "joint_positions/run/b/joint_positions.mat"
    savemat(mat, {"pos_img": np.full((2, 15, FRAMES), np.nan)})
    with pytest.raises(DatasetError, match="non-finite") as err:
        JHMDB(split="test", root=tmp_path / "cache", data_dir=jhmdb, **SMALL).arrays(["target_points"])
    assert str(mat) in str(err.value)
    savemat(mat, {"pos_img": np.zeros((2, 15, FRAMES + 2))})
    with pytest.raises(DatasetError, match="has 7 frames"):
        JHMDB(split="test", root=tmp_path / "c3", data_dir=jhmdb, **SMALL).arrays(["target_points"])
    mat.write_bytes(b"not a mat file")
    with pytest.raises(DatasetError, match="cannot read MATLAB file"):
        JHMDB(split="test", root=tmp_path / "c4", data_dir=jhmdb, **SMALL).arrays(["target_points"])


def test_jhmdb_joint_far_outside_the_frame_names_the_joint(tmp_path):
    """A joint may lie past the frame's border (it is occluded in the clip), but not further than one
    frame: 1e6 px is not a position in a 64x48 video. Every frame is checked, sampled or not."""
    data = make_jhmdb(tmp_path / "jhmdb")
    mat = data / "joint_positions/run/b/joint_positions.mat"
    pos = np.full((2, 15, FRAMES), 20.0)
    pos[0, 3, 2] = 1e6  # frame 2 is not among the sampled frames 0, 1, 3, 4
    savemat(mat, {"pos_img": pos})
    with pytest.raises(DatasetError) as err:
        JHMDB(split="test", root=tmp_path / "cache", data_dir=data, **SMALL).arrays(["target_points"])
    assert str(err.value) == (f"{mat}: 'pos_img' at x, joint 3, frame 2 is 1e+06: expected a joint at most 1 frame "
                              f"beyond the 64x48 frame (-64 <= x <= 128, -48 <= y <= 96)")
    pos[0, 3, 2], pos[1, 3, 1] = 20.0, -40.0  # above the frame, within one frame height
    savemat(mat, {"pos_img": pos})
    clip = JHMDB(split="test", root=tmp_path / "cache", data_dir=data, cache=False, **SMALL)[0]
    assert clip["occluded"][3].tolist() == [False, True, False, False] and not clip["occluded"][4].any()


def test_unreadable_davis_sequence_directory(tmp_path, deny):
    data = make_davis(tmp_path / "davis")
    frames = deny(data / "JPEGImages/480p/goat")
    with pytest.raises(DatasetError) as err:
        Davis(split="test", root=tmp_path / "cache", data_dir=data, **SMALL)
    assert str(err.value) == f"{frames}: frames of sequence 'goat' cannot be read (permission denied)"
