"""Video ViT: shapes across resolutions and frame counts, readout depth, RoPE, errors."""
import pytest
import torch

from bench.models.vit import IMAGENET_MEAN, IMAGENET_STD, RoPE3D, ViTConfig, VideoViT, grid_coords, normalize_video
from bench.models.zoo import SIZES
from bench.registry import resolve_model


@pytest.mark.parametrize("pos", ["learned", "rope"])
@pytest.mark.parametrize("frames,size", [(4, 16), (8, 32), (2, 24)])
def test_output_shape_at_several_resolutions(pos, frames, size):
    cfg = ViTConfig(embed_dim=32, depth=4, num_heads=2, mlp_dim=64, patch_size=(2, 8, 8), img_size=16,
                    num_frames=4, pos_embed=pos)
    model = VideoViT(cfg).eval()
    x = normalize_video(torch.randint(0, 256, (2, frames, size, size, 3), dtype=torch.uint8))
    out = model(x)
    assert out.shape == (2, frames // 2, (size // 8) ** 2, 32)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float64])
def test_normalize_video_is_imagenet_normalisation_channels_first_and_contiguous(dtype):
    """Bit-identical to the textbook ((x / 255) − mean) / std in float32, moved to [B, 3, T, H, W]."""
    video = torch.randint(0, 256, (2, 4, 8, 8, 3), dtype=torch.uint8).to(dtype)
    x = video.float() / 255.0
    expected = ((x - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)).permute(0, 4, 1, 2, 3)
    out = normalize_video(video)
    assert out.dtype == torch.float32 and out.is_contiguous() and torch.equal(out, expected)


def test_readout_depth_095_of_12_blocks_reads_the_input_of_block_10_as_4ds():
    cfg = ViTConfig(embed_dim=16, depth=12, num_heads=2, mlp_dim=32, patch_size=(2, 8, 8), img_size=16,
                    num_frames=2)
    model = VideoViT(cfg).eval()
    # 4DS: [tokens, in0, ..., in11][int(13 * 0.95) - 1 = 11] = input of block 10
    assert model.readout_index == 10
    x = torch.randn(1, 3, 2, 16, 16)
    all_inputs = model.forward_all(x)
    assert len(all_inputs) == 13
    torch.testing.assert_close(model(x).flatten(1, 2), all_inputs[10])
    inputs = {}
    model.blocks[10].register_forward_hook(lambda m, args, out: inputs.setdefault("block10", args[0]))
    model.forward_all(x)
    torch.testing.assert_close(model(x).flatten(1, 2), inputs["block10"])


@pytest.mark.parametrize("depth, readout_depth, block_input", [
    (8, 0.95, 6),     # t models: the output of block 5, the last encoder block before a 2-block decoder
    (24, 0.95, 21),   # L: [tokens, in0..in23][int(25 * 0.95) - 1 = 22] = input of block 21
    (12, 1.0, 11),    # 4DS never reads the last block's output
    (12, 0.0, 0),
])
def test_readout_index_follows_the_4ds_list(depth, readout_depth, block_input):
    cfg = ViTConfig(embed_dim=16, depth=depth, num_heads=2, mlp_dim=32, readout_depth=readout_depth)
    entries = ["tokens"] + [f"in{i}" for i in range(depth)]  # EncoderToReadout's list
    index = max(int((depth + 1) * readout_depth) - 1, 0)
    assert block_input == (0 if entries[index] == "tokens" else int(entries[index][2:]))
    with torch.device("meta"):
        assert VideoViT(cfg).readout_index == block_input


def test_rope_is_relative_attention_scores_depend_on_offsets_only():
    rope = RoPE3D(head_dim=40, split=(0.1, 0.25, 0.25))
    q, k = torch.randn(1, 1, 1, 40), torch.randn(1, 1, 1, 40)
    a = torch.tensor([[1.0, 2.0, 3.0], [2.0, 4.0, 1.0]])
    shifted = a + torch.tensor([3.0, -1.0, 5.0])

    def score(coords):
        cos, sin = rope(coords)
        qa = RoPE3D.rotate(q, (cos[..., :1, :], sin[..., :1, :]))
        kb = RoPE3D.rotate(k, (cos[..., 1:, :], sin[..., 1:, :]))
        return (qa * kb).sum()

    torch.testing.assert_close(score(a), score(shifted))
    assert rope.dims == [4, 10, 10]  # 10/25/25 % of 40 channels, 40% unrotated


def test_learned_positions_interpolate_to_a_new_grid():
    model = VideoViT(ViTConfig(embed_dim=16, depth=1, num_heads=2, mlp_dim=32, patch_size=(2, 8, 8),
                               img_size=16, num_frames=2))
    assert model.position_embedding((2, 4, 4)).shape == (1, 32, 16)
    torch.testing.assert_close(model.position_embedding((1, 2, 2)), model.pos_embed.reshape(1, 4, 16))


def test_indivisible_clip_is_a_clear_error():
    model = VideoViT(ViTConfig(embed_dim=16, depth=1, num_heads=2, mlp_dim=32, patch_size=(2, 8, 8)))
    with pytest.raises(ValueError, match="not divisible by the tubelet size"):
        model.grid_for(16, 60, 64)


def test_size_table_matches_the_papers_parameter_counts():
    expected_m = {"s": 22, "b": 87, "l": 306}  # docs/design.md §4 (blocks only, ~)
    for size, millions in expected_m.items():
        c = SIZES[size]
        per_block = 4 * c["embed_dim"] ** 2 + 2 * c["embed_dim"] * c["mlp_dim"]
        assert abs(per_block * c["depth"] / 1e6 - millions) / millions < 0.05
    assert resolve_model("layerlock_t").architecture().pos_embed == "rope" and resolve_model("mae_t").architecture().pos_embed == "learned"


def test_grid_coords_raster_order():
    c = grid_coords((2, 2, 3))
    assert c.shape == (12, 3) and c[0].tolist() == [0, 0, 0] and c[-1].tolist() == [1, 1, 2]
    assert c[1].tolist() == [0, 0, 1]


def test_v_jepa2_rope_options_and_defaults_left_out_of_the_sidecar():
    assert not {"mlp_act", "norm_eps", "rope_theta", "rope_freqs"} & set(ViTConfig().to_dict())  # cache keys unchanged
    assert ViTConfig(rope_freqs="tile", norm_eps=1e-12).to_dict()["rope_freqs"] == "tile"
    with pytest.raises(ValueError, match="rope_freqs='half'"):
        ViTConfig(rope_freqs="half")
    # a third per axis, rounded down to even as V-JEPA 2's 2·⌊⌊d/3⌋/2⌋ (no float loss at d = 96)
    assert RoPE3D(64, (1 / 3,) * 3).dims == [20, 20, 20] and RoPE3D(96, (1 / 3,) * 3).dims == [32, 32, 32]
    coords = grid_coords((2, 3, 3)).float()
    tile, _ = RoPE3D(64, (1 / 3,) * 3, theta=10000.0, freqs="tile")(coords)
    inter, _ = RoPE3D(64, (1 / 3,) * 3, theta=10000.0)(coords)
    t_block = tile[0, :, :20]  # time axis: the 10 frequencies repeated end to end, not pairwise
    torch.testing.assert_close(t_block, torch.cat([inter[0, :, 0:20:2]] * 2, dim=-1))
