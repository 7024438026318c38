"""Checkpoint IO and the zoo: roundtrip, integrity checks, clear errors, no unpickling."""
import errno
import json
from pathlib import Path

import pytest
import torch

from bench.errors import CheckpointError, UserError
from bench.files import atomic_write_files
from bench.models.checkpoint import (conforms, load_checkpoint, load_torch_state_dict, read_sidecar,
                                    save_checkpoint, save_timm_checkpoint, sidecar_path, sidecar_problem,
                                    timm_architecture, type_name)
from bench.models import build_encoder


def test_roundtrip_is_exact(tiny_vit, tmp_path):
    sha = save_checkpoint(tiny_vit, tmp_path / "m.safetensors", {"steps": 3})
    model, meta = load_checkpoint(tmp_path / "m.safetensors")
    assert meta["sha256"] == sha and meta["train_config"] == {"steps": 3}
    for (k, a), (_, b) in zip(tiny_vit.state_dict().items(), model.state_dict().items()):
        assert torch.equal(a, b), k


def test_truncated_file_and_wrong_architecture_are_refused(tiny_vit, tmp_path):
    path = tmp_path / "m.safetensors"
    save_checkpoint(tiny_vit, path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="does not match its sidecar"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="unreadable safetensors"):
        load_checkpoint(path, verify=False)
    save_checkpoint(tiny_vit, path)
    meta = json.loads(sidecar_path(path).read_text())
    meta["architecture"]["depth"] = 5
    sidecar_path(path).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="do not match the sidecar architecture"):
        load_checkpoint(path)


def test_missing_checkpoint_names_path_and_command(tmp_path):
    with pytest.raises(CheckpointError) as err:
        build_encoder("layerlock_t", tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "layerlock_t.safetensors") in msg and "python -m pretrain.run model=layerlock_t" in msg


def test_random_models_are_seeded():
    a, meta_a = build_encoder("random_t", seed=1, img_size=32, num_frames=4)
    b, meta_b = build_encoder("random_t", seed=1, img_size=32, num_frames=4)
    c, _ = build_encoder("random_t", seed=2, img_size=32, num_frames=4)
    assert meta_a["sha256"] == meta_b["sha256"]
    assert torch.equal(a.blocks[0].attn.qkv.weight, b.blocks[0].attn.qkv.weight)
    assert not torch.equal(a.blocks[0].attn.qkv.weight, c.blocks[0].attn.qkv.weight)


class Payload:
    def __reduce__(self):
        import os
        return (os.system, ("touch PWNED",))


def test_pickle_payload_is_refused_and_never_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"model": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="refused to load"):
        load_torch_state_dict(tmp_path / "evil.pt")
    assert not (tmp_path / "PWNED").exists()
    torch.save({"model": {"w": torch.ones(2)}}, tmp_path / "ok.pt")
    assert torch.equal(load_torch_state_dict(tmp_path / "ok.pt")["w"], torch.ones(2))


def without(key):
    return lambda meta: meta.pop(key)


def put(value, *keys):
    def edit(meta):
        for key in keys[:-1]:
            meta = meta[key]
        meta[keys[-1]] = value
    return edit


FIELDS = ("depth, embed_dim, img_size, in_chans, mlp_act, mlp_dim, norm_eps, num_frames, num_heads, patch_size, "
          "pos_embed, readout_depth, rope_freqs, rope_split, rope_theta")
SIDECAR_CASES = [  # (edit of a valid sidecar, what the error says after "<sidecar path>: ")
    (without("sha256"), "sha256: missing (expected 64 lowercase hex digits)"),
    (put("abc123", "sha256"), 'sha256: "abc123" is not a sha256 digest (expected 64 lowercase hex digits)'),
    (put("z" * 64, "sha256"), f'sha256: "{"z" * 64}" is not a sha256 digest (expected 64 lowercase hex digits)'),
    (put("AB" * 32, "sha256"), f'sha256: "{"AB" * 32}" is not a sha256 digest (expected 64 lowercase hex digits)'),
    (put(12, "sha256"), "sha256: 12 is not a sha256 digest (expected 64 lowercase hex digits)"),
    (without("format"), 'format: missing (expected "frozen4d-vit/1" or "timm/1")'),
    (put("frozen4d-vit/2", "format"),
     'format: "frozen4d-vit/2" is not a known format (expected "frozen4d-vit/1" or "timm/1")'),
    (without("architecture"),
     "architecture: missing (expected an object of ViTConfig fields, or of timm keyword arguments)"),
    (put([1, 2], "architecture"),
     "architecture: [1, 2] is not an object (expected an object of ViTConfig fields, or of timm keyword arguments)"),
    (put("twelve", "architecture", "depth"), 'architecture.depth: "twelve" is a string (expected int)'),
    (put(True, "architecture", "depth"), "architecture.depth: true is a boolean (expected int)"),
    (put(4.0, "architecture", "depth"), "architecture.depth: 4.0 is a number (expected int)"),
    (put(None, "architecture", "embed_dim"), "architecture.embed_dim: null is not allowed (expected int)"),
    (put("32", "architecture", "embed_dim"), 'architecture.embed_dim: "32" is a string (expected int)'),
    (put([2, 4], "architecture", "patch_size"), "architecture.patch_size: [2, 4] is a list (expected [int, int, int])"),
    (put([2, 4, "4"], "architecture", "patch_size"),
     'architecture.patch_size: [2, 4, "4"] is a list (expected [int, int, int])'),
    (put("0.95", "architecture", "readout_depth"), 'architecture.readout_depth: "0.95" is a string (expected float)'),
    (put(float("nan"), "architecture", "readout_depth"),
     "architecture.readout_depth: NaN is a non-finite number (expected float)"),
    (put(False, "architecture", "norm_eps"), "architecture.norm_eps: false is a boolean (expected float)"),
    (put(1, "architecture", "pos_embed"), "architecture.pos_embed: 1 is an integer (expected str)"),
    (put(0.1, "architecture", "rope_split"),
     "architecture.rope_split: 0.1 is a number (expected [float, float, float])"),
    (put(3, "architecture", "colour"), f"architecture.colour: unknown field (expected one of {FIELDS})"),
    (lambda meta: meta["architecture"].pop("num_heads"), "architecture.num_heads: missing (expected int)"),
    (put("spiral", "architecture", "pos_embed"),
     "architecture: pos_embed='spiral': expected one of 'learned', 'rope', 'sincos'"),
    (put(3, "architecture", "num_heads"), "architecture: embed_dim=32 is not divisible by num_heads=3"),
]


@pytest.mark.parametrize("edit,problem", SIDECAR_CASES, ids=[p.split(" (")[0] for _, p in SIDECAR_CASES])
def test_sidecars_are_checked_against_the_schema(tiny_vit, tmp_path, edit, problem):
    path = tmp_path / "m.safetensors"
    save_checkpoint(tiny_vit, path)
    meta = json.loads(sidecar_path(path).read_text())
    edit(meta)
    sidecar_path(path).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert str(err.value) == f"{sidecar_path(path)}: {problem}" and isinstance(err.value, UserError)


TIMM_CASES = [  # (edit of a valid timm/1 sidecar, what the error says after "<sidecar path>: ")
    (lambda meta: meta["architecture"].pop("timm"),
     "architecture.timm: null is not a timm architecture name (expected a string)"),
    (put(3, "architecture", "timm"), "architecture.timm: 3 is not a timm architecture name (expected a string)"),
    (put(0, "architecture", "depth"), "architecture.depth: 0 is an integer (expected a positive number)"),
    (put("12", "architecture", "depth"), 'architecture.depth: "12" is a string (expected a positive number)'),
    (put(float("inf"), "architecture", "mlp_ratio"),
     "architecture.mlp_ratio: Infinity is a non-finite number (expected a positive number)"),
]


@pytest.mark.parametrize("edit,problem", TIMM_CASES, ids=[p.split(" (")[0] for _, p in TIMM_CASES])
def test_timm_sidecars_are_checked_against_their_schema(tmp_path, edit, problem):
    path = tmp_path / "frames.safetensors"
    save_timm_checkpoint({"w": torch.ones(2)}, "vit_small_patch14_dinov2", {"depth": 12, "mlp_ratio": 4.0}, path)
    meta = json.loads(sidecar_path(path).read_text())
    edit(meta)
    sidecar_path(path).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError) as err:
        read_sidecar(path)
    assert str(err.value) == f"{sidecar_path(path)}: {problem}"


def test_a_timm_checkpoint_is_no_videovit_and_its_sha256_is_checked(tmp_path):
    path = tmp_path / "frames.safetensors"
    save_timm_checkpoint({"w": torch.ones(2)}, "vit_small_patch14_dinov2", {"depth": 12}, path)
    assert timm_architecture(path, read_sidecar(path)) == ("vit_small_patch14_dinov2", {"depth": 12})
    with pytest.raises(CheckpointError, match=r"a timm/1 checkpoint, not a frozen4d VideoViT .*model.name=frames"):
        load_checkpoint(path)
    path.write_bytes(path.read_bytes()[:-1] + b"\x01")
    with pytest.raises(CheckpointError, match="does not match its sidecar"):
        timm_architecture(path, read_sidecar(path))


@pytest.mark.parametrize("value,hint,ok", [
    (3, int, True), (True, int, False), (3.0, int, False), ("3", int, False), (3, float, True),
    (float("inf"), float, False), (None, int | None, True), (None, int, False), (2, int | None, True),
    ([1, 2, 3], tuple[int, int, int], True), ([1, 2], tuple[int, int, int], False), ([0.5, 1], tuple[float, ...], True),
])
def test_schema_types_follow_the_dataclass_hints(value, hint, ok):
    """Optional fields (``X | None``) take null; ints are never bools; fixed tuples need their length."""
    assert conforms(value, hint) is ok
    assert type_name(int | None) == "int or null" and type_name(tuple[float, ...]) == "[float, ...]"


def test_sidecars_that_are_not_json_objects(tiny_vit, tmp_path):
    path = tmp_path / "m.safetensors"
    save_checkpoint(tiny_vit, path)
    sidecar_path(path).write_text("[1, 2]")
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert str(err.value) == f"{sidecar_path(path)}: (top level): [1, 2] is not an object (expected a JSON object)"
    sidecar_path(path).write_text('{"format": ')
    with pytest.raises(CheckpointError, match=r"m\.json: not valid JSON \(Expecting value: line 1 column 12"):
        load_checkpoint(path)


def test_every_committed_sidecar_fits_the_schema():
    sidecars = sorted((Path(__file__).resolve().parents[1] / "leaderboard" / "checkpoints").glob("*.json"))
    assert sidecars and all(sidecar_problem(json.loads(p.read_text())) is None for p in sidecars)


def deny_reading(monkeypatch, denied: Path) -> None:
    """Opening ``denied`` fails as a file without read permission does (chmod cannot deny root)."""
    import builtins
    real_open = builtins.open

    def deny(file, *args, **kwargs):
        if isinstance(file, (str, Path)) and Path(file) == denied:
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)
    monkeypatch.setattr(builtins, "open", deny)


def test_a_checkpoint_that_is_a_directory_or_unreadable_is_named(tiny_vit, tmp_path, monkeypatch):
    """The weights path (a .safetensors that is a folder, beside a valid sidecar), a sidecar that is a
    folder, and files without read permission: one line each, not a traceback, not 'corrupt'."""
    good = tmp_path / "good.safetensors"
    save_checkpoint(tiny_vit, good)
    folder = tmp_path / "folder.safetensors"
    folder.mkdir()
    sidecar_path(folder).write_text(sidecar_path(good).read_text())
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(folder)
    assert str(err.value) == f"{folder}: is a directory; expected a .safetensors checkpoint file"
    with pytest.raises(CheckpointError, match="is a directory"):
        timm_architecture(folder, read_sidecar(folder))
    sidecar_path(folder).unlink()
    sidecar_path(folder).mkdir()
    with pytest.raises(CheckpointError) as err:
        read_sidecar(tmp_path / "folder.safetensors")
    assert str(err.value) == f"{sidecar_path(folder)}: is a directory; expected the checkpoint's JSON sidecar file"
    for denied in (good, sidecar_path(good)):
        deny_reading(monkeypatch, denied)
        with pytest.raises(CheckpointError) as err:
            load_checkpoint(good)
        assert str(err.value) == f"{denied}: cannot be read (permission denied)" and isinstance(err.value, UserError)
        monkeypatch.undo()


def test_a_directory_target_is_refused_before_any_file_of_the_set_is_written(tmp_path):
    """Weights and sidecar are renamed one after the other: a sidecar path that is a folder must fail
    before the weights are renamed into place, or they would be left without a sidecar."""
    (tmp_path / "m.json").mkdir()
    with pytest.raises(IsADirectoryError):
        atomic_write_files({tmp_path / "m.safetensors": b"weights", tmp_path / "m.json": b"{}"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"] and not list((tmp_path / "m.json").iterdir())
