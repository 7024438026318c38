"""Pretraining: recipes, schedules, masking, freezing, targets, losses, state, data order, FLOPs.

Everything runs in-process on tiny models (width 32, 4 blocks, 4x32x32 clips)."""
from __future__ import annotations

import json
import math
import random
from dataclasses import replace

import numpy as np
import pytest
import torch

from bench.errors import ConfigError
from bench.fit import cosine_with_warmup, optimizer
from bench.models.vit import ViTConfig, VideoViT, normalize_video
from bench.models import build_encoder
from bench.models.zoo import FAMILIES, SIZES
from bench.registry import resolve_model
from pretrain.collapse import effective_rank, feature_std
from pretrain.data import BatchStream, MovingPatterns
from pretrain.flops import schedule_flops, step_flops
from pretrain.layerlock import PIXEL, Phase, Schedule
from pretrain.masking import random_masking
from pretrain.model import build_pretrain_model
from pretrain.recipes import recipe_for, resolve_recipe, resolve_schedule
from pretrain.run import load_config
from pretrain.state import atomic_torch_save, capture_rng, load_state, restore_rng
from pretrain.train import Trainer

TINY = ["data.name=patterns", "data.num_frames=4", "data.resolution=32", "data.train_size=16",
        "arch.embed_dim=32", "arch.depth=4", "arch.num_heads=2", "arch.mlp_dim=64",
        "train.decoder_depth=1", "train.batch_size=4", "train.warmup_steps=2", "device=cpu"]
# layerlock with 4 blocks, decoder 1: at most 2 frozen; pixel until 4, freezes at 4 and 8
LL = ["model=layerlock_t", "train.steps=16", "train.pixel_steps=4", "train.freeze_interval=4",
      "train.rewarmup_steps=3"]


def trainer(tmp_path, *overrides: str) -> Trainer:
    cfg = load_config([*TINY, f"paths.runs={tmp_path}/runs", f"paths.checkpoints={tmp_path}/ckpt", *overrides])
    return Trainer(cfg)


# ---------------------------------------------------------------------------- recipes
def test_every_trainable_zoo_name_has_a_recipe_and_random_has_none():
    for family in FAMILIES:
        for size, arch in SIZES.items():
            name = f"{family}_{size}"
            if family == "random":
                with pytest.raises(ValueError, match="untrained"):
                    resolve_recipe(name, arch["depth"])
                continue
            if family == "supervised":  # trained on ground truth by pretrain.supervised, its own recipe
                with pytest.raises(ValueError, match="supervised"):
                    resolve_recipe(name, arch["depth"])
                continue
            r = resolve_recipe(name, arch["depth"])
            assert r["objective"] == family
            assert r["pixel_steps"] < r["steps"]
            assert 1 <= r["max_frozen_blocks"] <= arch["depth"] - r["decoder_depth"] - 1
            last_freeze = r["pixel_steps"] + (r["max_frozen_blocks"] - 1) * r["freeze_interval"]
            assert last_freeze < r["steps"], name


def test_paper_schedule_shape_vit_g_and_scaled_t():
    g = resolve_recipe("layerlock_g", 48)
    assert (g["pixel_steps"], g["freeze_interval"], g["max_frozen_blocks"]) == (160_000, 10_000, 32)
    assert g["decoder_depth"] == 4 and g["mask_ratio"] == 0.95
    t = resolve_recipe("layerlock_t", 8)
    assert t["decoder_depth"] == 2 and t["max_frozen_blocks"] == 5
    assert t["pixel_steps"] == t["steps"] // 2  # pixel phase: first half
    # overriding steps rescales the schedule; absolute overrides win
    double = resolve_recipe("layerlock_t", 8, {"steps": 2 * t["steps"]})
    assert double["pixel_steps"] == t["steps"] and double["freeze_interval"] == 2 * t["freeze_interval"]
    assert resolve_recipe("layerlock_t", 8, {"pixel_steps": 7})["pixel_steps"] == 7
    with pytest.raises(ValueError, match="unknown recipe field"):
        resolve_recipe("mae_t", 8, {"stepz": 3})
    with pytest.raises(ValueError, match="latent_loss_on"):
        resolve_recipe("layerlock_t", 8, {"latent_loss_on": "some"})


# ---------------------------------------------------------------------------- schedules
def schedule(name: str, depth: int, **overrides) -> Schedule:
    return Schedule.from_recipe(resolve_recipe(name, depth, overrides))


def test_targets_switch_at_the_scheduled_steps_to_the_right_block():
    s = schedule("layerlock_t", 8, steps=100, pixel_steps=40, freeze_interval=10)
    assert s.freeze_steps() == [40, 50, 60, 70, 80] == s.switch_steps()
    assert s.phase_at(39) == PIXEL
    assert s.phase_at(40) == Phase(1, "latent", (0,))
    assert s.phase_at(59) == Phase(2, "latent", (1,))
    assert s.phase_at(80) == s.phase_at(99) == Phase(5, "latent", (4,))
    both = replace(s, latent_targets="all_frozen", freeze_jump=2)
    assert both.phase_at(50) == Phase(4, "latent", (0, 1, 2, 3))
    assert both.phase_at(60).frozen == 5  # capped at max_frozen_blocks
    pixel = replace(s, freeze_target="pixel")
    assert pixel.phase_at(70) == Phase(4, "pixel", ()) and pixel.switch_steps() == []
    assert replace(s, freeze_jump=0).freeze_steps() == [] and replace(s, freeze_jump=0).phase_at(99) == PIXEL
    nofreeze = schedule("latent_nofreeze_t", 8, steps=100, pixel_steps=40)
    assert nofreeze.phase_at(39) == PIXEL and nofreeze.phase_at(40) == Phase(0, "latent", (4,))
    assert nofreeze.switch_steps() == [40]
    mae = schedule("mae_t", 8)
    assert {mae.phase_at(step) for step in range(0, mae.steps, 97)} == {PIXEL}
    assert s.segments() == [(0, 40, PIXEL), *[(a, a + 10, s.phase_at(a)) for a in (40, 50, 60, 70)],
                            (80, 100, Phase(5, "latent", (4,)))]


def test_the_recorded_recipe_holds_the_whole_schedule_and_bad_schedules_are_refused():
    """The record (state, sidecar) gives back the schedule it was resolved from; a schedule that
    cannot run is a ConfigError naming the key, before any step."""
    recipe = replace(recipe_for("layerlock_t"), steps=100)
    assert schedule("layerlock_t", 8, steps=100) == resolve_schedule(recipe, 8)
    for key, value, allowed in (("freeze_interval", 0, ">= 1"), ("freeze_jump", -1, ">= 0"),
                                ("pixel_steps", -3, ">= 0")):
        with pytest.raises(ConfigError, match=f"^train.{key}={value} must be {allowed}$"):
            resolve_recipe("layerlock_t", 8, {key: value})
    with pytest.raises(ConfigError, match=r"^train.target_block=6 must be an encoder block \(< 6\)$"):
        resolve_recipe("latent_nofreeze_t", 8, {"target_block": 6})
    with pytest.raises(ConfigError, match=r"^layerlock needs depth - decoder_depth >= 2 \(depth=4, decoder_depth=3\)$"):
        resolve_recipe("layerlock_t", 4, {"decoder_depth": 3})


FLOAT32_POSITIVE = "expected a finite number > 0 that float32 holds (magnitude in [1.2e-38, 3.4e38])"


BAD_RECIPE_VALUES = [
    ("train.ckpt_every=0", "train.ckpt_every=0: expected an integer >= 1"),
    ("train.log_every=0", "train.log_every=0: expected an integer >= 1"),
    ("train.steps=0", "train.steps=0: expected an integer >= 1"),
    ("train.lr=nan", f"train.lr=nan: {FLOAT32_POSITIVE}"),
    ("train.lr=inf", f"train.lr=inf: {FLOAT32_POSITIVE}"),
    ("train.lr=-1e-3", f"train.lr=-0.001: {FLOAT32_POSITIVE}"),
    ("train.lr=1e39", f"train.lr=1e+39: {FLOAT32_POSITIVE}"),     # finite in float64, inf in float32
    ("train.lr=1e-46", f"train.lr=1e-46: {FLOAT32_POSITIVE}"),    # positive in float64, 0 in float32
    ("train.weight_decay=-0.1", "train.weight_decay=-0.1: expected a finite number >= 0 that float32 holds "
                                "(magnitude in [1.2e-38, 3.4e38])"),
    ("train.beta2=1.0", "train.beta2=1.0: expected a number in [0, 1) that float32 holds"),
    ("train.max_frozen=nan", f"train.max_frozen=nan: {FLOAT32_POSITIVE}"),
]


@pytest.mark.parametrize("override, message", BAD_RECIPE_VALUES, ids=[case[0] for case in BAD_RECIPE_VALUES])
def test_bad_recipe_values_are_refused_naming_the_key(override, message):
    """A value that would stop the loop (a modulo by zero) or never train (a NaN, Inf or, in float32,
    zero learning rate) is a ConfigError when the recipe is resolved, before any step."""
    train = load_config([*TINY, "model=layerlock_t", override]).train
    with pytest.raises(ConfigError) as info:
        resolve_recipe("layerlock_t", 4, dict(train))
    assert str(info.value) == message


def test_the_supervised_recipe_is_checked_by_the_same_rules():
    from pretrain.supervised import recipe

    with pytest.raises(ConfigError, match=r"^train.ckpt_every=0: expected an integer >= 1$"):
        recipe({"ckpt_every": 0})
    with pytest.raises(ConfigError, match=r"^train.lr=nan: expected a finite number > 0"):
        recipe({"lr": float("nan")})


def test_lr_warmup_cosine_and_rewarmup_shape():
    ll = schedule("layerlock_t", 8, steps=200, warmup_steps=10, pixel_steps=100, freeze_interval=20,
                  rewarmup_steps=5, min_lr_ratio=0.0)
    sw = ll.switch_steps()
    lrs = [ll.lr_at(step) for step in range(200)]
    peak = ll.lr
    assert lrs[0] == pytest.approx(peak / 10) and lrs[9] == pytest.approx(peak)   # linear warmup
    assert max(lrs) == pytest.approx(peak)
    assert lrs[-1] < 1e-3 * peak                                                   # cosine to ~0
    for s in sw:
        envelope = [peak * cosine_with_warmup(s + i, 200, 10, 0.0) for i in range(6)]
        ramp = [lrs[s + i] / envelope[i] for i in range(6)]
        assert ramp == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0, 1.0])                # linear re-warmup
        assert lrs[s - 1] > lrs[s]                                                   # drop at the switch
    # between switches the schedule is the plain cosine
    assert lrs[30] == pytest.approx(peak * cosine_with_warmup(30, 200, 10, 0.0))
    floor = schedule("mae_t", 8, steps=200, warmup_steps=10, min_lr_ratio=0.1)
    assert floor.lr_at(199) == pytest.approx(0.1 * floor.lr, rel=1e-3) and floor.lr_at(500) == 0.1 * floor.lr


def test_readouts_and_pretraining_share_one_cosine():
    """bench.fit's readout schedule is the same warmup + cosine, decaying to 0."""
    opt, sched = optimizer(torch.nn.Linear(2, 2), lr=1.0, weight_decay=0.0, total_steps=50, warmup_frac=0.1)
    lrs = []
    for _ in range(51):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == [cosine_with_warmup(step, 50, 5) for step in range(51)]
    assert lrs[0] == 0.2 and lrs[4] == 1.0 and lrs[50] == 0.0


# ---------------------------------------------------------------------------- masking / model
def test_random_masking_is_per_sample_disjoint_and_complete():
    keep, mask = random_masking(3, 100, 0.95, torch.Generator().manual_seed(0))
    assert keep.shape == (3, 5) and mask.shape == (3, 95)
    for b in range(3):
        assert sorted(torch.cat([keep[b], mask[b]]).tolist()) == list(range(100))
    assert not torch.equal(keep[0], keep[1])


def tiny_model(objective: str, pos: str, frozen_input: str = "visible"):
    arch = ViTConfig(embed_dim=32, depth=4, num_heads=2, mlp_dim=64, patch_size=(2, 8, 8), img_size=32,
                     num_frames=4, pos_embed=pos)
    recipe = resolve_recipe(f"{objective}_t", 4, {"decoder_depth": 1, "frozen_input": frozen_input})
    torch.manual_seed(0)
    return build_pretrain_model(VideoViT(arch), recipe, Schedule.from_recipe(recipe)), recipe


@pytest.mark.parametrize("pos", ["learned", "rope"])
def test_visible_path_never_sees_masked_content_reuse_does(pos):
    """Changing the pixels of masked tubelets must not change any prediction (only targets)."""
    video = normalize_video(torch.randint(0, 256, (2, 4, 32, 32, 3), dtype=torch.uint8))
    keep, mask = random_masking(2, 32, 0.75, torch.Generator().manual_seed(1))
    poked = video.clone()
    t, y, x = mask[0, 0] // 16, (mask[0, 0] % 16) // 4, mask[0, 0] % 4   # a masked tubelet of clip 0
    poked[0, :, 2 * t:2 * t + 2, 8 * y:8 * y + 8, 8 * x:8 * x + 8] += 3.0
    for mode, leaks in (("visible", False), ("reuse", True)):
        model, _ = tiny_model("layerlock", pos, mode)
        for phase in (PIXEL, Phase(1, "latent", (0,)), Phase(2, "latent", (1,))):
            with torch.no_grad():
                a = model.predict(video, keep, mask, phase)[0]
                b = model.predict(poked, keep, mask, phase)[0]
            same = torch.equal(a[0], b[0])
            assert same != (leaks and phase.frozen > 0), (mode, phase)
            if phase.loss == "latent":
                assert not torch.equal(a[1], b[1])  # the target is computed on the full clip


def test_latent_loss_on_masked_only_and_all_frozen_targets():
    model, _ = tiny_model("layerlock", "rope")
    video = torch.randn(2, 3, 4, 32, 32)
    keep, mask = random_masking(2, 32, 0.75, torch.Generator().manual_seed(0))
    pairs = model.predict(video, keep, mask, Phase(2, "latent", (0, 1)))
    assert len(pairs) == 2 and pairs[0][0].shape == pairs[0][1].shape == (2, 32, 32)
    model.latent_loss_on = "masked"
    pred, target = model.predict(video, keep, mask, Phase(2, "latent", (1,)))[0]
    assert pred.shape == target.shape == (2, 24, 32)
    pred, target = model.predict(video, keep, mask, PIXEL)[0]
    assert pred.shape == target.shape == (2, 24, 2 * 8 * 8 * 3)


# ---------------------------------------------------------------------------- training
def test_freezing_really_freezes(tmp_path):
    t = trainer(tmp_path, *LL)
    enc = t.model.encoder
    while t.step < 5:  # step 4 freezes block 0 (and the embedding)
        t.train_step()
    assert t.phase == Phase(1, "latent", (0,))
    frozen0 = {n: p.detach().clone() for n, p in enc.named_parameters()
               if n.startswith(("blocks.0.", "patch_embed"))}
    trainable2 = {n: p.detach().clone() for n, p in enc.blocks[2].named_parameters()}
    while t.step < 16:
        t.train_step()
    assert t.phase == Phase(2, "latent", (1,))
    for n, p in enc.named_parameters():
        if n in frozen0:
            assert torch.equal(p, frozen0[n]), f"frozen {n} changed"
    in_opt = {id(p) for g in t.optimizer.param_groups for p in g["params"]}
    for module in (enc.patch_embed, enc.blocks[0], enc.blocks[1], t.model.pixel_head, t.model.latent_heads[0]):
        for p in module.parameters():
            assert not p.requires_grad and p.grad is None
            assert id(p) not in in_opt and p not in t.optimizer.state
    assert all(not torch.equal(p, trainable2[n]) for n, p in enc.blocks[2].named_parameters())
    # optimizer moments of every trainable parameter survived the rebuilds
    assert all(p in t.optimizer.state for g in t.optimizer.param_groups for p in g["params"])
    assert int(t.optimizer.state[enc.blocks[3].mlp.fc1.weight]["step"]) == 16


def test_run_logs_the_schedule_and_exports_a_checkpoint(tmp_path):
    t = trainer(tmp_path, *LL, "train.log_every=1", "train.ckpt_every=8")
    assert t.fit() == "done"
    records = [json.loads(line) for line in (tmp_path / "runs/layerlock_t/metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(16))
    assert [(r["frozen"], r["target_block"]) for r in records] == [(0, -1)] * 4 + [(1, 0)] * 4 + [(2, 1)] * 8
    for s in (4, 8):  # re-warmup after each target switch
        assert records[s]["lr"] < records[s - 1]["lr"] and records[s]["lr"] < records[s + 1]["lr"]
    assert all(r["eff_rank"] > 1 and r["feat_std"] > 0 for r in records)
    assert (tmp_path / "runs/layerlock_t/metrics.png").stat().st_size > 0
    model, meta = build_encoder("layerlock_t", tmp_path / "ckpt")
    assert meta["train_config"]["recipe"]["objective"] == "layerlock"
    assert meta["train_config"]["recipe"]["pixel_steps"] == 4 and model.cfg.pos_embed == "rope"
    torch.testing.assert_close(model.state_dict(), t.model.encoder.state_dict())


def test_mae_loss_decreases(tmp_path):
    t = trainer(tmp_path, "model=mae_t", "train.steps=60", "train.lr=2e-3", "train.mask_ratio=0.75")
    losses = [t.train_step()[0] for _ in range(60)]
    assert np.mean(losses[-10:]) < 0.7 * np.mean(losses[:5]), losses


def test_latent_nofreeze_trains_everything_against_its_own_block(tmp_path):
    t = trainer(tmp_path, "model=latent_nofreeze_t", "train.steps=6", "train.pixel_steps=3", "train.target_block=1")
    for _ in range(6):
        t.train_step()
    assert t.phase == Phase(0, "latent", (1,))
    assert all(p.requires_grad for p in t.model.encoder.parameters())
    assert not any(p.requires_grad for p in t.model.pixel_head.parameters())


# ---------------------------------------------------------------------------- metrics / state / data
def test_collapse_metrics():
    torch.manual_seed(0)
    assert effective_rank(torch.eye(16)) == pytest.approx(16.0, rel=1e-6)
    rank1 = torch.randn(50, 1) @ torch.randn(1, 16)
    assert effective_rank(rank1) == pytest.approx(1.0, abs=1e-3)
    assert feature_std(torch.ones(10, 8) * 3.0) == pytest.approx(0.0)
    assert feature_std(torch.randn(4000, 8) * 2.0) == pytest.approx(2.0, rel=0.05)


def test_state_is_weights_only_loadable_and_restores_every_rng(tmp_path):
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    np.random.standard_normal()  # a cached gaussian in numpy's state
    state = {"rng": capture_rng(), "x": torch.arange(3), "nested": {"a": [1, 2.5, "s", None]}}
    draws = (random.random(), np.random.standard_normal(), torch.rand(2))
    atomic_torch_save(state, tmp_path / "s.pt")
    loaded = load_state(tmp_path / "s.pt")
    restore_rng(loaded["rng"])
    again = (random.random(), np.random.standard_normal(), torch.rand(2))
    assert draws[:2] == again[:2] and torch.equal(draws[2], again[2])
    assert [p.name for p in tmp_path.iterdir()] == ["s.pt"]  # no temp file left behind


def test_batch_stream_resumes_and_shards_by_rank():
    videos = np.arange(10).reshape(10, 1, 1, 1, 1).astype(np.uint8)
    a = BatchStream(videos, 4, seed=3)
    first = [a.next_indices().tolist() for _ in range(5)]          # crosses two epochs (2 batches each)
    assert sorted(first[0] + first[1]) == sorted(set(first[0] + first[1]))
    assert first[0] != first[2]                                     # a new permutation per epoch
    b = BatchStream(videos, 4, seed=3)
    for _ in range(3):
        b.next_indices()
    c = BatchStream(videos, 4, seed=3)
    c.load_state_dict(b.state_dict())
    assert [c.next_indices().tolist() for _ in range(2)] == first[3:5]
    shards = [BatchStream(videos, 4, seed=3, rank=r, world_size=2) for r in range(2)]
    for batch in first:
        parts = [s.next_indices().tolist() for s in shards]
        assert sorted(parts[0] + parts[1]) == sorted(batch) and parts[0] == batch[0::2]
    with pytest.raises(ValueError, match="divisible"):
        BatchStream(videos, 3, seed=0, world_size=2)


def test_moving_patterns_are_deterministic_and_move():
    a, b = MovingPatterns(num_frames=4, resolution=16, train_size=3), MovingPatterns(num_frames=4, resolution=16,
                                                                                      train_size=3)
    va = a.arrays(["video"])["video"]
    assert va.shape == (3, 4, 16, 16, 3) and va.dtype == np.uint8
    assert np.array_equal(va, b.arrays(["video"])["video"])
    assert np.abs(va[:, 0].astype(int) - va[:, -1]).mean() > 1


def test_analytic_flops_match_the_counted_flops():
    """The FLOP model behind the predicted LayerLock saving equals torch's FLOP counter (which
    does not count SDPA on CPU, hence attention=False) for MAE, frozen-pixel and latent steps."""
    from torch.utils.flop_counter import FlopCounterMode

    arch = ViTConfig(embed_dim=64, depth=6, num_heads=2, mlp_dim=256, patch_size=(2, 8, 8), img_size=32,
                     num_frames=8, pos_embed="rope")
    recipe = resolve_recipe("layerlock_t", 6, {"decoder_depth": 2})
    model = build_pretrain_model(VideoViT(arch), recipe, Schedule.from_recipe(recipe))
    g = torch.Generator().manual_seed(0)
    for phase in (PIXEL, Phase(3, "pixel", ()), Phase(2, "latent", (1,)), Phase(3, "latent", (2,))):
        model.set_phase(phase)
        keep, mask = random_masking(2, 64, recipe["mask_ratio"], g)
        with FlopCounterMode(display=False) as counter:
            model(torch.randn(2, 3, 8, 32, 32), keep, mask, phase).backward()
        predicted = step_flops(arch, recipe, phase, 2, 64, attention=False)["total"]
        assert counter.get_total_flops() == pytest.approx(predicted, rel=1e-9), phase


def test_schedule_flops_pixel_freezing_saves_latent_targets_cost():
    arch = resolve_model("layerlock_g").architecture(img_size=224, num_frames=16)
    tokens = 8 * 14 * 14

    def saving(recipe: dict) -> float:
        return schedule_flops(arch, recipe, Schedule.from_recipe(recipe), 1, tokens)["saving"]

    assert 0.05 < saving(resolve_recipe("layerlock_g", 48, {"freeze_target": "pixel"})) < 0.25
    assert saving(resolve_recipe("layerlock_g", 48)) < 0  # full-clip targets cost more than they save
    assert math.isclose(saving(resolve_recipe("mae_g", 48)), 0.0, abs_tol=1e-12)


def test_trains_on_the_synthetic_world(tmp_path):
    world = ["data.name=synthetic", "data.num_frames=4", "data.resolution=32", "data.train_size=8",
             "data.test_size=2", "data.num_points=8", "data.max_objects=2", f"paths.cache={tmp_path}/cache"]
    t = trainer(tmp_path, "model=mae_t", "train.steps=2", *world)
    assert t.stream.videos.shape == (8, 4, 32, 32, 3)
    assert all(math.isfinite(t.train_step()[0]) for _ in range(2))


@pytest.mark.parametrize("depth, decoder_depth, readout_depth, role", [
    (8, 2, 0.95, "encoder"),    # t: the input of block 6 is the last encoder block's output
    (12, 4, 0.95, "decoder"),   # s/b: the input of block 10 is the output of decoder block 9
    (12, 4, 0.75, "encoder"),   # int(13 * 0.75) - 1 = 8: the input of block 7
])
def test_readout_role_says_whether_the_benchmark_reads_an_encoder_or_a_decoder_block(
        depth, decoder_depth, readout_depth, role):
    from pretrain.train import readout_role

    with torch.device("meta"):
        index = VideoViT(ViTConfig(embed_dim=16, depth=depth, num_heads=2, mlp_dim=32,
                                   readout_depth=readout_depth)).readout_index
    assert readout_role(index, depth, decoder_depth)["role"] == role
