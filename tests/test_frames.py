"""Image encoders frame by frame (bench.models.frames): timm ViTs with random weights, checked
against timm's own forward on each frame; the readout block; weights files; names; the CLI."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.errors import MissingConfigException
from safetensors.torch import save_file
from timm.data import IMAGENET_DEFAULT_MEAN, resolve_model_data_config
from timm.layers import resample_abs_pos_embed

from bench.errors import CheckpointError, ConfigError
from bench.files import sha256_file
from bench.models import build_encoder
from bench.models.checkpoint import save_checkpoint, save_timm_checkpoint
from bench.models.frames import FrameEncoder, build_frame_encoder, readout_block, token_px
from bench.models.vit import ViTConfig, VideoViT, normalize_video
from bench.registry import resolve_model

ROOT = Path(__file__).resolve().parents[1]


def video(size: int, frames: int = 3, batch: int = 2) -> torch.Tensor:
    """A random uint8 clip [B, T, H, W, 3]."""
    gen = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (batch, frames, size, size, 3), generator=gen, dtype=torch.uint8)


def clip(size: int, frames: int = 3, batch: int = 2) -> torch.Tensor:
    """A normalised random clip [B, 3, T, H, W], as frozen4d feeds encoders."""
    return normalize_video(video(size, frames, batch))


def encoder(arch: str, img_size: int, seed: int = 0) -> FrameEncoder:
    torch.manual_seed(seed)
    return FrameEncoder(arch, img_size).eval()


def timm_reference(enc: FrameEncoder) -> torch.nn.Module:
    """A plain timm model of the encoder's architecture and size holding its weights."""
    ref = timm.create_model(enc.cfg.arch, pretrained=False, img_size=enc.cfg.img_size).eval()
    ref.load_state_dict(enc.model.state_dict())
    return ref


def test_tokens_tile_the_clip_at_the_scale_nearest_the_patch():
    assert [token_px(64, 14), token_px(64, 16), token_px(64, 8), token_px(224, 14), token_px(256, 14)] == \
        [16, 16, 8, 14, 16]
    assert token_px(48, 14) == 12  # 12 and 16 are as near: the smaller, frames are enlarged


@pytest.mark.parametrize("arch,size,prefix,grid,mean", [
    # class + 4 registers, ImageNet mean/std; 48 px in 12-px tokens: frames resized to 56 px, a 4×4 grid
    ("vit_small_patch14_reg4_dinov2", 48, 5, 4, IMAGENET_DEFAULT_MEAN),
    # class token only, 0.5 mean/std (augreg) re-applied; 32 px is 2×2 patches, no resize
    ("vit_tiny_patch16_224", 32, 1, 2, (0.5, 0.5, 0.5)),
    # DINOv3 (timm's Eva: RoPE, no position table), class + 4 registers
    ("vit_tiny_patch16_dinov3_qkvb", 32, 5, 2, IMAGENET_DEFAULT_MEAN),
])
@torch.inference_mode()
def test_features_equal_timm_forward_intermediates_per_frame(arch, size, prefix, grid, mean):
    enc = encoder(arch, size)
    ref = timm_reference(enc)
    data = resolve_model_data_config(ref)
    assert enc.cfg.mean == tuple(data["mean"]) == tuple(mean)
    raw = video(size).float().div(255).permute(0, 1, 4, 2, 3)  # [B, T, 3, H, W] in [0, 1]
    feats = enc(clip(size))
    assert feats.shape == (2, 3, grid * grid, enc.cfg.embed_dim) and enc.grid_for(3, size, size) == (3, grid, grid)
    for t in range(raw.shape[1]):
        frame = (raw[:, t] - torch.tensor(data["mean"])[:, None, None]) / torch.tensor(data["std"])[:, None, None]
        frame = F.interpolate(frame, size=enc.cfg.img_size, mode="bilinear", align_corners=False, antialias=True)
        spatial, prefix_tokens = ref.forward_intermediates(frame, indices=[enc.block], return_prefix_tokens=True,
                                                           norm=False, output_fmt="NLC", intermediates_only=True)[0]
        assert prefix_tokens.shape[1] == prefix
        torch.testing.assert_close(feats[:, t], spatial)


@torch.inference_mode()
def test_readout_block_follows_the_4ds_rule():
    assert readout_block(12) == 9 and readout_block(24) == 20 and readout_block(40) == 35
    for depth in (3, 4, 5, 8, 12, 16, 24, 32, 40, 48, 56):  # the same entry as frozen4d's own ViTs
        vit = VideoViT(ViTConfig(embed_dim=8, depth=depth, num_heads=1, mlp_dim=8, img_size=8, num_frames=2))
        assert readout_block(depth) == vit.readout_index - 1
    with pytest.raises(ValueError, match="2-block"):
        readout_block(2)
    enc = encoder("vit_tiny_patch16_224", 16)  # 12 blocks: the output of block 9 (the input of block 10)
    assert enc.cfg.depth == 12 and enc.block == 9 and enc.readout_index == 10
    seen = {}
    enc.model.blocks[9].register_forward_hook(lambda m, i, out: seen.setdefault("out", out))
    feats = enc(clip(16, frames=1))
    torch.testing.assert_close(feats[:, 0], seen["out"][:, enc.cfg.num_prefix_tokens:])


def test_a_fixed_token_size_sets_the_frame_grid_and_must_tile_the_clip():
    enc = FrameEncoder("vit_small_patch14_dinov2", 64, token_px=8)
    assert enc.cfg.img_size == (112, 112) and enc.grid_for(4, 64, 64) == (4, 8, 8)
    assert enc(clip(64, frames=2, batch=1)).shape == (1, 2, 64, 384)
    assert FrameEncoder("vit_small_patch14_dinov2", 64).cfg.img_size == (56, 56)  # null: 16-px tokens
    with pytest.raises(ConfigError, match=r"features.token_px=7: must divide the clip side 64"):
        FrameEncoder("vit_small_patch14_dinov2", 64, token_px=7)


TINY = {"embed_dim": 32, "depth": 3, "num_heads": 2, "patch_size": 8}


@torch.inference_mode()
def test_a_timm_checkpoint_and_its_random_twin_run_by_name(tmp_path):
    """``<name>`` with a timm/1 sidecar is its weights run frame by frame; ``random_<name>`` is the
    same architecture with seeded weights; a VideoViT checkpoint's twin is a seeded VideoViT."""
    torch.manual_seed(5)
    source = timm.create_model("vit_small_patch14_dinov2", img_size=32, **TINY)
    sha = save_timm_checkpoint(source.state_dict(), "vit_small_patch14_dinov2", TINY, tmp_path / "tiny.safetensors")
    real, meta = build_encoder("tiny", tmp_path, img_size=32)
    assert meta["sha256"] == sha and real.cfg.embed_dim == 32 and real.cfg.table_resize == "bicubic"
    key = "blocks.0.attn.qkv.weight"
    torch.testing.assert_close(real.model.state_dict()[key], source.state_dict()[key])
    twin, twin_meta = build_encoder("random_tiny", tmp_path, seed=3, img_size=32)
    expected, _ = build_frame_encoder("vit_small_patch14_dinov2", 32, seed=3, overrides=TINY)
    torch.testing.assert_close(twin(clip(32)), expected(clip(32)), rtol=0, atol=0)
    assert twin_meta["source"] == "random init (timm)" and resolve_model("random_tiny").tubelet(tmp_path) is None
    vit = VideoViT(ViTConfig(embed_dim=32, depth=2, num_heads=2, mlp_dim=64, patch_size=(2, 8, 8), img_size=32,
                             num_frames=4))
    save_checkpoint(vit, tmp_path / "video.safetensors")
    torch.manual_seed(3)
    expected_vit = VideoViT(vit.cfg).eval()
    twin_vit, _ = build_encoder("random_video", tmp_path, seed=3)
    torch.testing.assert_close(twin_vit(clip(32, frames=4)), expected_vit(clip(32, frames=4)), rtol=0, atol=0)
    assert resolve_model("random_video").tubelet(tmp_path) == (2, 8, 8)
    with pytest.raises(CheckpointError, match=r"model 'absent': checkpoint .*absent.safetensors not found"):
        build_encoder("random_absent", tmp_path)


def test_external_models_and_their_twins_are_references_of_their_own_kind():
    assert resolve_model("dinov2_s14_imgfocus").reference == resolve_model("random_dinov2_s14_imgfocus").reference == "external"
    assert resolve_model("random_t").reference == "random" and resolve_model("random_my_checkpoint").reference is None
    assert resolve_model("mae_t").reference is None


@torch.inference_mode()
def test_weights_file_round_trip_and_position_table_resampling(tmp_path):
    arch = "vit_tiny_patch16_224"
    source = encoder(arch, 32)
    path = tmp_path / "tiny.safetensors"
    save_file(source.model.state_dict(), str(path))
    loaded, meta = build_encoder(f"timm/{arch}", seed=1, weights=str(path), img_size=32)
    assert meta == {"sha256": sha256_file(path), "source": str(path)}
    torch.testing.assert_close(loaded(clip(32)), source(clip(32)), rtol=0, atol=0)
    torch.save(source.model.state_dict(), tmp_path / "tiny.pth")  # .pth: a weights-only torch.load
    torch.testing.assert_close(FrameEncoder(arch, 32, tmp_path / "tiny.pth")(clip(32)), source(clip(32)))
    small = FrameEncoder(arch, 16, path)  # a 2×2 table resampled to 1×1, without antialiasing (DINOv2's way)
    expected = resample_abs_pos_embed(source.model.pos_embed, new_size=(1, 1), num_prefix_tokens=1, antialias=False)
    torch.testing.assert_close(small.model.pos_embed, expected)


@pytest.mark.parametrize("name,content,message", [
    ("bad.safetensors", b"not a safetensors file", "unreadable safetensors file"),
    ("bad.pth", b"\x80\x02garbage", "refused to load"),
    ("weights.npz", b"", "expected a .safetensors"),
    ("missing.safetensors", None, "not found"),
])
def test_bad_weights_file_is_a_one_line_error_naming_it(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message) as err:
        build_frame_encoder("vit_tiny_patch16_224", 16, weights=path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_weights_of_another_architecture_are_refused(tmp_path):
    path = tmp_path / "tiny.safetensors"
    save_file(encoder("vit_tiny_patch16_224", 16).model.state_dict(), str(path))
    with pytest.raises(CheckpointError, match="do not fit timm/vit_small_patch16_224: size mismatch") as err:
        FrameEncoder("vit_small_patch16_224", 16, path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("name,message", [
    ("timm/vit_nope_patch16", "timm has no architecture 'vit_nope_patch16'"),
    ("timm/resnet18", "'timm/resnet18' is not a ViT"),
])
def test_bad_timm_names_are_one_line_errors(name, message):
    with pytest.raises(ValueError, match=message) as err:
        build_encoder(name)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="model.weights is for timm/<arch> models"):
        build_encoder("random_t", weights="x.safetensors")


def test_hydra_nodes_for_common_timm_vits():
    from bench.run import hydra_error  # importing bench.run registers the ConfigStore nodes
    archs = ["vit_small_patch14_dinov2", "vit_base_patch14_dinov2", "vit_large_patch14_dinov2",
             "vit_giant_patch14_dinov2", "vit_small_patch14_reg4_dinov2", "vit_giant_patch14_reg4_dinov2",
             "vit_small_patch16_dinov3", "vit_large_patch16_dinov3", "vit_base_patch16_siglip_224",
             "vit_base_patch16_224", "vit_tiny_patch16_224"]
    with initialize_config_dir(config_dir=str(ROOT / "bench" / "configs"), version_base="1.3"):
        for arch in archs:
            cfg = compose("bench", overrides=[f"model=timm/{arch}", "model.weights=/w.safetensors"])
            assert cfg.model == {"name": f"timm/{arch}", "weights": "/w.safetensors"}
        cfg = compose("bench", overrides=["model.name=timm/deit_tiny_patch16_224"])  # any other timm ViT
    assert build_encoder(cfg.model.name, img_size=16)[1]["sha256"] == "timm-random-seed0-deit_tiny_patch16_224"
    missing = MissingConfigException("Could not find 'model/timm/deit_s'", "model/timm/deit_s", ["random_t"])
    assert hydra_error(missing).endswith("any other timm ViT is model.name=timm/<arch>")


def test_cli_evaluates_a_timm_vit_with_a_weights_file(tmp_path):
    arch = "vit_small_patch14_dinov2"
    weights = tmp_path / "dinov2_s.safetensors"
    save_file(encoder(arch, 56).model.state_dict(), str(weights))  # a 4×4 table; the 32-px run needs 2×2
    args = [sys.executable, "-m", "bench.run", "task=depth", f"model=timm/{arch}", f"model.weights={weights}",
            "data.train_size=8", "data.test_size=4", "data.num_frames=4", "data.resolution=32", "readout.epochs=1",
            "readout.batch_size=4", "visualize=false", f"paths.cache={tmp_path / 'cache'}",
            f"paths.results={tmp_path / 'results'}", f"hydra.run.dir={tmp_path / 'out'}"]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    record = json.loads((tmp_path / "results" / f"depth__synthetic__timm-{arch}__attentive__seed0.json").read_text())
    assert record["model"] == f"timm/{arch}" and record["checkpoint_sha256"] == sha256_file(weights)
    assert record["config"]["model"] == {"name": f"timm/{arch}", "weights": str(weights)}
