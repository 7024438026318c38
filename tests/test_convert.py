"""Public checkpoint converters: each source's parameter layout (names and shapes as its public
code defines them) is built at a tiny size with random values, converted, and the converted
VideoViT's block-by-block activations are compared against a reference forward written here
from the source's published architecture (its own block math, position table and bias
handling). Plus the safety and error-message contract: pickle payloads are refused unrun,
missing keys / bad shapes / unreadable files are one-line errors naming the file."""
from __future__ import annotations

import argparse
import errno
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bench.files import sha256_file
from bench.models import build_encoder
from bench.models.checkpoint import load_checkpoint
from bench.models.convert import ConversionError, convert
from bench.models.convert import fourds, videomae, vjepa
from bench.models.vit import normalize_video
from tests.test_checkpoint import deny_reading

D, DEPTH, HEADS, MLP = 64, 2, 4, 256
PATCH = (2, 8, 8)
FRAMES, SIZE = 4, 32
GRID = (FRAMES // 2, SIZE // 8, SIZE // 8)
N = GRID[0] * GRID[1] * GRID[2]


def rand(gen: torch.Generator, *shape: int, scale: float = 1.0, offset: float = 0.0) -> torch.Tensor:
    return torch.randn(*shape, generator=gen) * scale + offset


def clip(seed: int = 0, frames: int = FRAMES, size: int = SIZE) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (2, frames, size, size, 3), generator=gen, dtype=torch.uint8)


def assert_features_match(ours: list[torch.Tensor], ref: list[torch.Tensor]) -> None:
    assert len(ours) == len(ref)
    for i, (a, b) in enumerate(zip(ours, ref)):
        assert a.shape == b.shape, (i, a.shape, b.shape)
        err = (a.double() - b.double()).abs().max().item()
        assert err < 1e-5 * max(1.0, b.abs().max().item()), f"activation {i}: max |diff| {err:.2e}"
    assert ref[-1].std() > 0.1  # the comparison is not between near-zero tensors


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Plain softmax(q kᵀ / √d) v over [B, H, N, d]."""
    w = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
    return w.softmax(dim=-1) @ v


# ---------------------------------------------------------------- VideoMAE (MCG-NJU layout)

def videomae_encoder_state(gen: torch.Generator, layer_scale: bool) -> dict[str, torch.Tensor]:
    s = {"patch_embed.proj.weight": rand(gen, D, 3, *PATCH, scale=0.05), "patch_embed.proj.bias": rand(gen, D, scale=0.1)}
    for i in range(DEPTH):
        b = f"blocks.{i}."
        s.update({
            b + "norm1.weight": rand(gen, D, scale=0.1, offset=1.0), b + "norm1.bias": rand(gen, D, scale=0.1),
            b + "attn.qkv.weight": rand(gen, 3 * D, D, scale=D ** -0.5),  # bias=False in the source
            b + "attn.q_bias": rand(gen, D, scale=0.2), b + "attn.v_bias": rand(gen, D, scale=0.2),
            b + "attn.proj.weight": rand(gen, D, D, scale=D ** -0.5), b + "attn.proj.bias": rand(gen, D, scale=0.1),
            b + "norm2.weight": rand(gen, D, scale=0.1, offset=1.0), b + "norm2.bias": rand(gen, D, scale=0.1),
            b + "mlp.fc1.weight": rand(gen, MLP, D, scale=D ** -0.5), b + "mlp.fc1.bias": rand(gen, MLP, scale=0.1),
            b + "mlp.fc2.weight": rand(gen, D, MLP, scale=MLP ** -0.5), b + "mlp.fc2.bias": rand(gen, D, scale=0.1),
        })
        if layer_scale:
            s[b + "gamma_1"], s[b + "gamma_2"] = rand(gen, D, scale=0.3, offset=0.5), rand(gen, D, scale=0.3, offset=0.5)
    return s


def videomae_finetune_file(path: Path, seed: int = 0) -> dict[str, torch.Tensor]:
    """modeling_finetune.VisionTransformer(use_mean_pooling=True, init_values>0): fc_norm + head."""
    gen = torch.Generator().manual_seed(seed)
    sd = videomae_encoder_state(gen, layer_scale=True)
    sd.update({"fc_norm.weight": torch.ones(D), "fc_norm.bias": torch.zeros(D),
               "head.weight": rand(gen, 10, D), "head.bias": torch.zeros(10)})
    torch.save({"module": sd}, path)
    return sd


def videomae_pretrain_file(path: Path, seed: int = 1) -> dict[str, torch.Tensor]:
    """modeling_pretrain.PretrainVisionTransformer as run_mae_pretraining saves it: {'model': ...,
    'epoch', 'args' (argparse.Namespace)}; encoder under 'encoder.', decoder alongside."""
    gen = torch.Generator().manual_seed(seed)
    enc = videomae_encoder_state(gen, layer_scale=False)
    sd = {f"encoder.{k}": v for k, v in enc.items()}
    sd.update({"encoder.norm.weight": torch.ones(D), "encoder.norm.bias": torch.zeros(D),
               "encoder_to_decoder.weight": rand(gen, 32, D), "mask_token": rand(gen, 1, 1, 32),
               "decoder.blocks.0.norm1.weight": torch.ones(32), "decoder.norm.weight": torch.ones(32),
               "decoder.head.weight": rand(gen, 3 * 2 * 8 * 8, 32), "decoder.head.bias": torch.zeros(3 * 2 * 8 * 8)})
    torch.save({"model": sd, "epoch": 799, "args": argparse.Namespace(model="pretrain_videomae_tiny", lr=1.5e-4)}, path)
    return enc


def videomae_table(n_position: int, d_hid: int) -> torch.Tensor:
    """get_sinusoid_encoding_table as published: angle(pos, j) = pos / 10000^(2 (j // 2) / d_hid);
    sin on even j, cos on odd j; [1, n_position, d_hid]."""
    rows = []
    for pos in range(n_position):
        row = []
        for j in range(d_hid):
            angle = pos / math.pow(10000, 2 * (j // 2) / d_hid)
            row.append(math.sin(angle) if j % 2 == 0 else math.cos(angle))
        rows.append(row)
    return torch.tensor(rows, dtype=torch.float32)[None]


def videomae_reference(sd: dict[str, torch.Tensor], x: torch.Tensor) -> list[torch.Tensor]:
    """VideoMAE encoder forward (PatchEmbed, fixed table, Block with q/v bias and layer scale)."""
    t = F.conv3d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=PATCH)
    t = t.flatten(2).transpose(1, 2)
    b_, n, c = t.shape
    t = t + videomae_table(n, c)
    outs = [t]
    for i in range(DEPTH):
        g = {k[len(f"blocks.{i}."):]: v for k, v in sd.items() if k.startswith(f"blocks.{i}.")}
        h = F.layer_norm(t, (c,), g["norm1.weight"], g["norm1.bias"], eps=1e-6)
        qkv_bias = torch.cat((g["attn.q_bias"], torch.zeros_like(g["attn.v_bias"]), g["attn.v_bias"]))
        qkv = F.linear(h, g["attn.qkv.weight"], qkv_bias).reshape(b_, n, 3, HEADS, -1).permute(2, 0, 3, 1, 4)
        a = attention(qkv[0], qkv[1], qkv[2]).transpose(1, 2).reshape(b_, n, -1)
        a = F.linear(a, g["attn.proj.weight"], g["attn.proj.bias"])
        t = t + (g["gamma_1"] * a if "gamma_1" in g else a)
        h = F.layer_norm(t, (c,), g["norm2.weight"], g["norm2.bias"], eps=1e-6)
        m = F.linear(F.gelu(F.linear(h, g["mlp.fc1.weight"], g["mlp.fc1.bias"])), g["mlp.fc2.weight"], g["mlp.fc2.bias"])
        t = t + (g["gamma_2"] * m if "gamma_2" in g else m)
        outs.append(t)
    return outs


@pytest.mark.parametrize("layout", ["finetune", "pretrain"])
def test_videomae_matches_reference(tmp_path, layout):
    src = tmp_path / f"videomae_{layout}.pth"
    sd = (videomae_finetune_file if layout == "finetune" else videomae_pretrain_file)(src)
    model, notes = videomae.convert(src, img_size=SIZE, num_frames=FRAMES, num_heads=HEADS)
    assert model.cfg.embed_dim == D and model.cfg.depth == DEPTH and tuple(model.cfg.patch_size) == PATCH
    x = normalize_video(clip())
    with torch.no_grad():
        assert_features_match(model.forward_all(x), videomae_reference(sd, x))
    dropped = {"finetune": ["fc_norm.bias", "fc_norm.weight", "head.bias", "head.weight"],
               "pretrain": ["norm.bias", "norm.weight"]}[layout]
    assert notes["dropped"] == dropped and notes["layer_scale_folded"] == (layout == "finetune")


def test_videomae_table_is_built_for_the_requested_clip(tmp_path):
    src = tmp_path / "videomae.pth"
    sd = videomae_pretrain_file(src)
    model, _ = videomae.convert(src, img_size=2 * SIZE, num_frames=2 * FRAMES, num_heads=HEADS)
    assert model.cfg.img_size == 2 * SIZE and model.cfg.num_frames == 2 * FRAMES
    x = normalize_video(clip(frames=2 * FRAMES, size=2 * SIZE))
    with torch.no_grad():  # VideoMAE built at that size: a longer fixed table, no interpolation
        assert_features_match(model.forward_all(x), videomae_reference(sd, x))


def test_videomae_table_is_rebuilt_for_every_clip_not_resampled(tmp_path):
    """Converted at the release size (224², 16 frames) and run on a 4×32² clip, the model adds the
    table VideoMAE would build for that clip, as upstream does; a resampled table would differ."""
    src = tmp_path / "videomae.pth"
    sd = videomae_pretrain_file(src)
    model, _ = videomae.convert(src, num_heads=HEADS)
    assert (model.cfg.img_size, model.cfg.num_frames, model.cfg.pos_embed) == (224, 16, "sincos")
    assert "pos_embed" not in model.state_dict()
    x = normalize_video(clip())
    with torch.no_grad():
        assert_features_match(model.forward_all(x), videomae_reference(sd, x))


# ---------------------------------------------------------------- V-JEPA (facebookresearch/jepa)

def vjepa_table(d: int, grid_size: int, grid_depth: int, uniform_power: bool) -> torch.Tensor:
    """get_3d_sincos_pos_embed as published: per token (d, h, w) in raster order, the 1D sin-cos
    codes of d, h and w (sin block then cos block, ω_k = 10000^(-k / (n/2))) concatenated, with
    n = D/2, D/4, D/4 — or ceil(D/6)·2 each under uniform_power, truncated to D."""
    if uniform_power:
        nd = nh = nw = int(np.ceil(d / 6) * 2)
    else:
        nd, nh, nw = d // 2, d // 4, d // 4

    def code(pos: int, n: int) -> list[float]:
        omegas = [1.0 / 10000 ** (k / (n / 2)) for k in range(n // 2)]
        return [math.sin(pos * o) for o in omegas] + [math.cos(pos * o) for o in omegas]

    rows = [(code(t, nd) + code(h, nh) + code(w, nw))[:d]
            for t in range(grid_depth) for h in range(grid_size) for w in range(grid_size)]
    return torch.tensor(rows, dtype=torch.float32)[None]


def vjepa_encoder_state(gen: torch.Generator) -> dict[str, torch.Tensor]:
    s = {"patch_embed.proj.weight": rand(gen, D, 3, *PATCH, scale=0.05), "patch_embed.proj.bias": rand(gen, D, scale=0.1),
         "pos_embed": vjepa_table(D, GRID[1], GRID[0], uniform_power=True), "norm.weight": torch.ones(D),
         "norm.bias": torch.zeros(D)}
    for i in range(DEPTH):
        b = f"blocks.{i}."
        s.update({
            b + "norm1.weight": rand(gen, D, scale=0.1, offset=1.0), b + "norm1.bias": rand(gen, D, scale=0.1),
            b + "attn.qkv.weight": rand(gen, 3 * D, D, scale=D ** -0.5), b + "attn.qkv.bias": rand(gen, 3 * D, scale=0.2),
            b + "attn.proj.weight": rand(gen, D, D, scale=D ** -0.5), b + "attn.proj.bias": rand(gen, D, scale=0.1),
            b + "norm2.weight": rand(gen, D, scale=0.1, offset=1.0), b + "norm2.bias": rand(gen, D, scale=0.1),
            b + "mlp.fc1.weight": rand(gen, MLP, D, scale=D ** -0.5), b + "mlp.fc1.bias": rand(gen, MLP, scale=0.1),
            b + "mlp.fc2.weight": rand(gen, D, MLP, scale=MLP ** -0.5), b + "mlp.fc2.bias": rand(gen, D, scale=0.1),
        })
    return s


def vjepa_file(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """app/vjepa/train.py's checkpoint: DDP(MultiMaskWrapper(encoder)) -> 'module.backbone.' keys."""
    gen = torch.Generator().manual_seed(2)
    context, target = vjepa_encoder_state(gen), vjepa_encoder_state(gen)
    wrap = lambda sd: {f"module.backbone.{k}": v for k, v in sd.items()}  # noqa: E731
    torch.save({"encoder": wrap(context), "target_encoder": wrap(target),
                "predictor": {"module.backbone.predictor_embed.weight": rand(gen, 32, D)},
                "opt": {"state": {}, "param_groups": [{"lr": 1e-3, "params": [0, 1]}]}, "scaler": None,
                "epoch": 300, "loss": 0.12, "batch_size": 24, "world_size": 128, "lr": 6.25e-4}, path)
    return context, target


def vjepa_reference(sd: dict[str, torch.Tensor], x: torch.Tensor, num_frames: int = FRAMES) -> list[torch.Tensor]:
    """V-JEPA VisionTransformer.forward without masks, minus the final norm: PatchEmbed3D, the
    stored table (interpolated with scale_factor, trilinear, as interpolate_pos_encoding does),
    Blocks with biased qkv."""
    pos = sd["pos_embed"]
    _, _, t_, h_, w_ = x.shape
    if t_ != num_frames or h_ != SIZE:
        nt, nh = num_frames // 2, SIZE // 8
        pos = F.interpolate(pos.reshape(1, nt, nh, nh, D).permute(0, 4, 1, 2, 3),
                            scale_factor=((t_ // 2) / nt, (h_ // 8) / nh, (w_ // 8) / nh), mode="trilinear")
        pos = pos.permute(0, 2, 3, 4, 1).reshape(1, -1, D)
    t = F.conv3d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=PATCH).flatten(2).transpose(1, 2)
    t = t + pos
    b_, n, c = t.shape
    outs = [t]
    for i in range(DEPTH):
        g = {k[len(f"blocks.{i}."):]: v for k, v in sd.items() if k.startswith(f"blocks.{i}.")}
        h = F.layer_norm(t, (c,), g["norm1.weight"], g["norm1.bias"], eps=1e-6)
        qkv = F.linear(h, g["attn.qkv.weight"], g["attn.qkv.bias"]).reshape(b_, n, 3, HEADS, c // HEADS)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        a = attention(q, k, v).transpose(1, 2).reshape(b_, n, c)
        t = t + F.linear(a, g["attn.proj.weight"], g["attn.proj.bias"])
        h = F.layer_norm(t, (c,), g["norm2.weight"], g["norm2.bias"], eps=1e-6)
        t = t + F.linear(F.gelu(F.linear(h, g["mlp.fc1.weight"], g["mlp.fc1.bias"])),
                         g["mlp.fc2.weight"], g["mlp.fc2.bias"])
        outs.append(t)
    return outs


def test_vjepa_matches_reference_and_reads_the_target_encoder(tmp_path):
    src = tmp_path / "vjepa.pth.tar"
    context, target = vjepa_file(src)
    model, notes = vjepa.convert(src, num_frames=FRAMES, num_heads=HEADS)  # img_size inferred from the table
    assert notes["checkpoint_key"] == "target_encoder" and notes["prefix"] == "module.backbone."
    assert model.cfg.img_size == SIZE and notes["dropped"] == ["norm.bias", "norm.weight"]
    x = normalize_video(clip())
    with torch.no_grad():
        assert_features_match(model.forward_all(x), vjepa_reference(target, x))
        x2 = normalize_video(clip(seed=3, frames=2 * FRAMES))  # V-JEPA interpolates its table; so do we
        assert_features_match(model.forward_all(x2), vjepa_reference(target, x2))
    ctx_model, notes = vjepa.convert(src, num_frames=FRAMES, num_heads=HEADS, checkpoint_key="encoder")
    with torch.no_grad():
        assert_features_match(ctx_model.forward_all(x), vjepa_reference(context, x))


# ---------------------------------------------------------------- 4DS (flax, representations4d)

P4 = "params/layers_0/"  # nn.Sequential([encoder, encoder2readout, readout]) -> layers_0 = the encoder


def fourds_file(path: Path, seed: int = 4) -> dict[str, np.ndarray]:
    """Flattened flax params as released (keys joined with '/'), including readout params."""
    rng = np.random.default_rng(seed)
    r = lambda *s, scale=1.0, offset=0.0: (rng.standard_normal(s) * scale + offset).astype(np.float32)  # noqa: E731
    hd = D // HEADS
    p = {P4 + "encoder/patch_embedding/Conv_0/kernel": r(*PATCH, 3, D, scale=0.1),
         P4 + "encoder/patch_embedding/Conv_0/bias": r(D, scale=0.1),
         P4 + "encoder/posenc/embeddings": r(*GRID, D, scale=0.5),
         "params/layers_2/query": r(16, 32), "params/layers_2/Dense_0/kernel": r(32, 8)}
    for i in range(DEPTH):
        s = f"{P4}processor/layers_{i}/"
        p.update({s + "attention_norm/scale": r(D, scale=0.1, offset=1.0), s + "attention_norm/bias": r(D, scale=0.1),
                  s + "mlp_norm/scale": r(D, scale=0.1, offset=1.0), s + "mlp_norm/bias": r(D, scale=0.1),
                  s + "attention/out/kernel": r(HEADS, hd, D, scale=D ** -0.5), s + "attention/out/bias": r(D, scale=0.1),
                  s + "mlp/dense_in/kernel": r(D, MLP, scale=D ** -0.5), s + "mlp/dense_in/bias": r(MLP, scale=0.1),
                  s + "mlp/dense_out/kernel": r(MLP, D, scale=MLP ** -0.5), s + "mlp/dense_out/bias": r(D, scale=0.1)})
        for n in ("query", "key", "value"):
            p[s + f"attention/{n}/kernel"] = r(D, HEADS, hd, scale=D ** -0.5)
            p[s + f"attention/{n}/bias"] = r(HEADS, hd, scale=0.2)
    np.savez(path, **p)
    return p


def fourds_reference(p: dict[str, np.ndarray], video01: np.ndarray) -> list[torch.Tensor]:
    """The 4DS encoder in its own (channels-last, flax) terms on RGB in [0, 1]: VALID Conv with
    kernel = stride = tubelet, + learned (T', h, w, C) embedding, flatten, kauldron PreNormBlocks
    (LayerNorm eps 1e-6, DenseGeneral q/k/v/out, softmax(q k / √d), TransformerMLP with flax's
    tanh-approximate gelu). Returns [tokens, output of block 0, ...] as float32 tensors."""
    g = {k: v.astype(np.float64) for k, v in p.items()}
    b, t, h, w, _ = video01.shape
    pt, ph, pw = PATCH
    x = video01.reshape(b, t // pt, pt, h // ph, ph, w // pw, pw, 3)
    tok = np.einsum("bTthHwWc,tHWcd->bThwd", x, g[P4 + "encoder/patch_embedding/Conv_0/kernel"])
    tok = tok + g[P4 + "encoder/patch_embedding/Conv_0/bias"] + g[P4 + "encoder/posenc/embeddings"]
    tok = tok.reshape(b, -1, D)

    def layer_norm(v, scale, bias):
        mean = v.mean(-1, keepdims=True)
        var = (v * v).mean(-1, keepdims=True) - mean * mean
        return (v - mean) / np.sqrt(var + 1e-6) * scale + bias

    def gelu_tanh(v):
        return 0.5 * v * (1 + np.tanh(np.sqrt(2 / np.pi) * (v + 0.044715 * v ** 3)))

    outs = [tok]
    for i in range(DEPTH):
        s = f"{P4}processor/layers_{i}/"
        y = layer_norm(tok, g[s + "attention_norm/scale"], g[s + "attention_norm/bias"])
        q, k, v = (np.einsum("bnd,dhk->bnhk", y, g[s + f"attention/{n}/kernel"]) + g[s + f"attention/{n}/bias"]
                   for n in ("query", "key", "value"))
        logits = np.einsum("bqhd,bkhd->bhqk", q / np.sqrt(q.shape[-1]), k)
        weights = np.exp(logits - logits.max(-1, keepdims=True))
        weights /= weights.sum(-1, keepdims=True)
        a = np.einsum("bhqk,bkhd->bqhd", weights, v)
        tok = tok + np.einsum("bqhd,hdo->bqo", a, g[s + "attention/out/kernel"]) + g[s + "attention/out/bias"]
        y = layer_norm(tok, g[s + "mlp_norm/scale"], g[s + "mlp_norm/bias"])
        m = gelu_tanh(y @ g[s + "mlp/dense_in/kernel"] + g[s + "mlp/dense_in/bias"])
        tok = tok + m @ g[s + "mlp/dense_out/kernel"] + g[s + "mlp/dense_out/bias"]
        outs.append(tok)
    return [torch.from_numpy(o).float() for o in outs]


def test_4ds_matches_reference(tmp_path):
    src = tmp_path / "scaling4d_tiny.npz"
    params = fourds_file(src)
    model, notes = fourds.convert(src)
    cfg = model.cfg
    assert (cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.mlp_dim) == (D, DEPTH, HEADS, MLP)
    assert (cfg.img_size, cfg.num_frames, cfg.mlp_act) == (SIZE, FRAMES, "gelu_tanh")
    assert notes["dropped"] == ["params/layers_2/Dense_0/kernel", "params/layers_2/query"]
    video = clip()
    with torch.no_grad():  # frozen4d feeds ImageNet-normalised frames; 4DS saw RGB / 255
        ours = model.forward_all(normalize_video(video))
    assert_features_match(ours, fourds_reference(params, video.numpy().astype(np.float64) / 255.0))


# ---------------------------------------------------------------- files, sidecars, CLI, errors

def test_written_checkpoint_records_the_source_and_loads_through_the_zoo(tmp_path):
    src = tmp_path / "scaling4d_tiny.npz"
    fourds_file(src)
    model, sha = convert("4ds", src, tmp_path / "ckpt" / "fourds_tiny.safetensors")
    meta = json.loads((tmp_path / "ckpt" / "fourds_tiny.json").read_text())
    assert meta["source"] == {"kind": "4ds", "file": src.name, "sha256": sha256_file(src)}
    assert meta["sha256"] == sha and meta["architecture"]["mlp_act"] == "gelu_tanh"
    loaded, _ = build_encoder("fourds_tiny", tmp_path / "ckpt")
    x = normalize_video(clip())
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_cli_converts_and_reports_errors_in_one_line(tmp_path):
    src = tmp_path / "vjepa.pth.tar"
    vjepa_file(src)
    out = tmp_path / "vjepa_tiny.safetensors"
    cmd = [sys.executable, "-m", "bench.models.convert", "vjepa", str(src), str(out), "--num-frames", str(FRAMES),
           "--num-heads", str(HEADS)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "model.name=vjepa_tiny" in proc.stdout
    model, meta = load_checkpoint(out)
    assert meta["source"]["kind"] == "vjepa" and meta["source"]["sha256"] == sha256_file(src)
    proc = subprocess.run(cmd[:3] + ["videomae", str(src), str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {src}: missing key")


class Payload:
    """Unpickling this calls open(marker, 'w'): a file appears if the loader runs pickled code."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("kind", ["videomae", "vjepa"])
def test_pickle_payload_is_refused_and_never_runs(tmp_path, kind):
    marker = tmp_path / "pwned"
    src = tmp_path / "evil.pt"
    sd = {"patch_embed.proj.weight": torch.zeros(D, 3, *PATCH)}
    torch.save({"model": sd, "encoder": sd, "hook": Payload(marker)}, src)
    with pytest.raises(ConversionError, match="refused") as err:
        convert(kind, src, tmp_path / "out.safetensors")
    assert str(src) in str(err.value) and "\n" not in str(err.value)
    assert not marker.exists() and not (tmp_path / "out.safetensors").exists()


def test_missing_keys_are_listed_with_the_file(tmp_path):
    src = tmp_path / "videomae.pth"
    sd = videomae_encoder_state(torch.Generator().manual_seed(0), layer_scale=False)
    del sd["blocks.1.mlp.fc2.weight"], sd["blocks.0.norm2.bias"]
    torch.save(sd, src)
    with pytest.raises(ConversionError) as err:
        convert("videomae", src, tmp_path / "out.safetensors", num_heads=HEADS)
    msg = str(err.value)
    assert msg.startswith(f"{src}: missing keys") and "blocks.1.mlp.fc2.weight" in msg and "blocks.0.norm2.bias" in msg

    npz = tmp_path / "fourds.npz"
    params = fourds_file(npz)
    del params[P4 + "processor/layers_1/attention/value/bias"]
    np.savez(npz, **params)
    with pytest.raises(ConversionError, match=r"missing keys .*layers_1/attention/value/bias") as err:
        convert("4ds", npz, tmp_path / "out.safetensors")
    assert str(err.value).startswith(str(npz))


def test_shape_mismatch_names_the_file_and_the_tensor(tmp_path):
    src = tmp_path / "vjepa.pth.tar"
    sd = vjepa_encoder_state(torch.Generator().manual_seed(0))
    sd["blocks.1.mlp.fc2.weight"] = torch.zeros(D, MLP + 1)
    torch.save({"target_encoder": sd}, src)
    with pytest.raises(ConversionError) as err:
        convert("vjepa", src, tmp_path / "out.safetensors", num_frames=FRAMES, num_heads=HEADS)
    assert str(err.value) == f"{src}: blocks.1.mlp.fc2.weight has shape [{D}, {MLP + 1}], expected [{D}, {MLP}]"

    sd = vjepa_encoder_state(torch.Generator().manual_seed(0))
    torch.save({"target_encoder": sd}, src)  # a table that is not 16 frames of square grids
    with pytest.raises(ConversionError, match=f"^{src}: the position table has {N} rows"):
        convert("vjepa", src, tmp_path / "out.safetensors", img_size=64, num_frames=FRAMES, num_heads=HEADS)


def test_unreadable_files_are_named(tmp_path):
    for kind, name in (("videomae", "junk.pth"), ("4ds", "junk.npz")):
        src = tmp_path / name
        src.write_bytes(b"\x00not a checkpoint" * 10)
        with pytest.raises(ConversionError, match=f"^{src}: ") as err:
            convert(kind, src, tmp_path / "out.safetensors")
        assert "\n" not in str(err.value)
    with pytest.raises(ConversionError, match="file not found"):
        convert("vjepa", tmp_path / "absent.pt", tmp_path / "out.safetensors")
    obj = tmp_path / "objects.npz"  # object arrays need pickle: refused
    np.savez(obj, **{P4 + "encoder/patch_embedding/Conv_0/kernel": np.array([{"a": 1}], dtype=object)})
    with pytest.raises(ConversionError, match=f"^{obj}: unreadable"):
        convert("4ds", obj, tmp_path / "out.safetensors")


INPUTS = {"videomae": ("in.pth", "a .pt/.pth checkpoint file"), "vjepa": ("in.pth", "a .pt/.pth checkpoint file"),
          "vjepa2": ("in.pt", "a .pt/.pth checkpoint file"), "4ds": ("in.npz", "an .npz parameter file"),
          "onnx-dinov2": ("in.onnx", "an .onnx model file")}


@pytest.mark.parametrize("kind", sorted(INPUTS))
def test_an_input_that_is_a_directory_or_unreadable_says_so(tmp_path, monkeypatch, kind):
    name, expected = INPUTS[kind]
    src = tmp_path / name
    src.mkdir()
    with pytest.raises(ConversionError) as err:
        convert(kind, src, tmp_path / "out.safetensors")
    assert str(err.value) == f"{src}: is a directory; expected {expected}"
    src.rmdir()
    src.write_bytes(b"\0" * 64)
    deny_reading(monkeypatch, src)
    with pytest.raises(ConversionError) as err:
        convert(kind, src, tmp_path / "out.safetensors")
    assert str(err.value) == f"{src}: cannot be read (permission denied)"


def test_outputs_that_cannot_be_written_are_refused_before_converting(tmp_path):
    src = tmp_path / "scaling4d_tiny.npz"
    fourds_file(src)
    (tmp_path / "dir.safetensors").mkdir()
    (tmp_path / "side.json").mkdir()
    (tmp_path / "afile").write_text("")
    cases = [(tmp_path / "dir.safetensors",
              f"{tmp_path / 'dir.safetensors'}: is a directory; expected the path of the .safetensors file to write"),
             (tmp_path / "side.safetensors", f"{tmp_path / 'side.json'}: is a directory, where the sidecar of "
                                             f"{tmp_path / 'side.safetensors'} goes; choose another output name"),
             (tmp_path / "afile" / "x.safetensors",
              f"{tmp_path / 'afile' / 'x.safetensors'}: cannot be written: {tmp_path / 'afile'} is a file, "
              f"not a folder")]
    for out, message in cases:
        with pytest.raises(ConversionError) as err:
            convert("4ds", src, out)
        assert str(err.value) == message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "dir.safetensors", "scaling4d_tiny.npz", "side.json"]
    assert list((tmp_path / "dir.safetensors").iterdir()) == []


def test_disk_full_while_writing_is_one_line_and_leaves_no_file(tmp_path, monkeypatch, capsys):
    """ENOSPC on the first fsync (the weights' temp file): one error line naming the output, no
    checkpoint, sidecar or temp file; an earlier checkpoint at that path is kept as it was."""
    from bench.models.convert.__main__ import main as cli
    src = tmp_path / "scaling4d_tiny.npz"
    fourds_file(src)
    out = tmp_path / "ckpt" / "fourds.safetensors"

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(os, "fsync", full)
    assert cli(["4ds", str(src), str(out)]) == 2
    assert capsys.readouterr().err == (f"error: {out}: cannot write the converted checkpoint (No space left on "
                                       f"device); any earlier checkpoint there is unchanged\n")
    assert list(out.parent.iterdir()) == []
    monkeypatch.undo()
    _, sha = convert("4ds", src, out)
    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(ConversionError, match="No space left on device"):
        convert("4ds", src, out, img_size=2 * SIZE)
    assert sorted(p.name for p in out.parent.iterdir()) == ["fourds.json", "fourds.safetensors"]
    assert sha256_file(out) == sha


@pytest.mark.parametrize("option, value", [("num_heads", 0), ("num_heads", -2), ("img_size", 0), ("img_size", -32),
                                           ("num_frames", 0), ("num_frames", True), ("img_size", 32.0)])
def test_size_options_from_python_are_checked_like_the_flags(tmp_path, option, value):
    """``convert(num_heads=0)`` would read as 'the default' and -2 be recorded as the head count."""
    src = tmp_path / "scaling4d_tiny.npz"
    fourds_file(src)
    with pytest.raises(ConversionError) as err:
        convert("4ds", src, tmp_path / "out.safetensors", **{option: value})
    assert str(err.value) == f"{option}={value!r}: expected an integer >= 1 (or None for the default)"
    assert not (tmp_path / "out.safetensors").exists()


@pytest.mark.parametrize("flag", ["--img-size", "--num-frames", "--num-heads"])
@pytest.mark.parametrize("value", ["0", "-2", "2.5", "many"])
def test_every_size_flag_refuses_what_is_no_count(tmp_path, capsys, flag, value):
    from bench.models.convert.__main__ import main as cli
    with pytest.raises(SystemExit) as exit_:
        cli(["4ds", str(tmp_path / "in.npz"), str(tmp_path / "out.safetensors"), flag, value])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and err[-1].endswith(f"error: argument {flag}: '{value}' is not an integer >= 1")


@pytest.mark.parametrize("kind, options, message", [
    ("4ds", dict(num_frames=3), "num_frames=3 is not divisible by the tubelet length 2"),  # was rounded down to 2
    ("4ds", dict(num_frames=1), "num_frames=1 is not divisible by the tubelet length 2"),
    ("4ds", dict(img_size=33), "img_size=33 is not divisible by the patch 8×8"),  # was rounded down to 32
    ("4ds", dict(img_size=4), "img_size=4 is not divisible by the patch 8×8"),
    ("vjepa2", dict(num_frames=3, num_heads=HEADS), "num_frames=3 is not divisible by the tubelet length 2"),
    ("vjepa2", dict(img_size=36, num_heads=HEADS), "img_size=36 is not divisible by the patch 8×8"),
], ids=["4ds-frames3", "4ds-frames1", "4ds-size33", "4ds-size4", "vjepa2-frames3", "vjepa2-size36"])
def test_clip_sizes_the_tubelets_do_not_tile_are_refused(tmp_path, kind, options, message):
    src = tmp_path / ("scaling4d_tiny.npz" if kind == "4ds" else "vitl.pt")
    fourds_file(src) if kind == "4ds" else vjepa_file(src)
    with pytest.raises(ConversionError) as err:
        convert(kind, src, tmp_path / "out.safetensors", **options)
    assert str(err.value) == f"{src}: {message}"
    assert not (tmp_path / "out.safetensors").exists()


def test_ctrl_c_is_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys):
    """The converted file is written atomically, so an interrupt leaves nothing of it."""
    import bench.models.convert.__main__ as cli

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "convert", interrupted)
    out = tmp_path / "x.safetensors"
    assert cli.main(["videomae", str(tmp_path / "in.pth"), str(out)]) == 130
    assert capsys.readouterr().err.strip() == f"interrupted: {out} was not written (any earlier file there is unchanged)"
    assert list(tmp_path.iterdir()) == []
