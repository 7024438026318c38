"""Checkpoint IO and the zoo: roundtrip, integrity checks, clear errors, no unpickling."""
import json

import pytest
import torch

from bench.models.checkpoint import (CheckpointError, load_checkpoint, load_torch_state_dict, save_checkpoint,
                                     sidecar_path)
from bench.models.zoo import build_encoder


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
