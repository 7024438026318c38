"""Analysis tools: the layer-convergence probe and the collapse comparison of runs.

Tiny models (width 32, 4 blocks with a 1-block decoder, 4x32x32 clips), in-process."""
from __future__ import annotations

import csv

import pytest
import torch
from tqdm import tqdm

from pretrain.analyze import main
from pretrain.convergence import MINIATURE, continue_frozen, make_trainer, merge_overrides, train_baseline
from pretrain.run import load_config
from pretrain.train import Trainer

TINY = ["data.name=patterns", "data.num_frames=4", "data.resolution=32", "data.train_size=16",
        "arch.embed_dim=32", "arch.depth=4", "arch.num_heads=2", "arch.mlp_dim=64",
        "train.decoder_depth=1", "train.batch_size=4", "train.warmup_steps=2", "device=cpu"]


def test_convergence_writes_an_L_by_T_heatmap_and_table_with_a_zero_baseline_row(tmp_path, capsys):
    out = tmp_path / "conv"
    assert main(["convergence", *TINY, "train.steps=8", "probe.at=[0,0.5]", "probe.tail=0.25",
                 f"probe.out={out}"]) == 0
    assert (out / "convergence.png").stat().st_size > 0
    rows = list(csv.reader((out / "convergence.csv").open()))
    assert rows[0] == ["L \\ T", "0 (0%)", "4 (50%)"]
    assert [r[0] for r in rows[1:]] == ["0", "1", "2"]  # 3 encoder blocks: L = 1..2 (one stays trainable)
    assert [float(v) for v in rows[1][1:]] == [0.0, 0.0]
    assert all(r[1] and r[2] for r in rows[1:])
    assert "| L \\ T |" in capsys.readouterr().out and (out / "convergence.md").exists()


def test_branches_keep_frozen_blocks_bit_identical_and_L0_reproduces_the_baseline(tmp_path):
    overrides = merge_overrides(MINIATURE, [*TINY, "train.steps=6"])
    baseline = make_trainer(overrides, str(tmp_path))
    losses, states = train_baseline(baseline, [3], tqdm(disable=True))
    same, _ = continue_frozen(overrides, states[3], 0, str(tmp_path))
    assert same == losses[3:]  # same data order, masks and schedule: bit for bit
    _, branch = continue_frozen(overrides, states[3], 2, str(tmp_path))
    assert branch.step == 6 and branch.phase.frozen == 2
    at_t = states[3]["model"]
    for name, p in branch.model.named_parameters():
        frozen = name.startswith(("encoder.patch_embed", "encoder.pos_embed", "encoder.blocks.0.", "encoder.blocks.1."))
        assert torch.equal(p, at_t[name]) == frozen, name


def test_convergence_rejects_a_non_mae_run_and_impossible_block_counts(tmp_path, capsys):
    assert main(["convergence", *TINY, "model=layerlock_t", f"probe.out={tmp_path}"]) == 2
    assert "use model=mae_<size>" in capsys.readouterr().err
    assert main(["convergence", *TINY, "probe.blocks=[3]", f"probe.out={tmp_path}"]) == 2
    assert "must stay trainable" in capsys.readouterr().err


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Tiny real runs of the three compared models (metrics logged at every step)."""
    root = tmp_path_factory.mktemp("pretrain")
    for model in ("mae_t", "layerlock_t", "latent_nofreeze_t"):
        cfg = load_config([*TINY, f"model={model}", "train.steps=4", "train.pixel_steps=2", "train.log_every=1",
                           f"paths.runs={root}/runs", f"paths.checkpoints={root}/ckpt"])
        assert Trainer(cfg).fit() == "done"
    return root / "runs"


def test_collapse_reads_the_runs_and_plots_every_block(runs, tmp_path, capsys):
    assert main(["collapse", "--runs", str(runs), "--out", str(tmp_path)]) == 0
    assert (tmp_path / "collapse.png").stat().st_size > 0
    rows = list(csv.reader((tmp_path / "collapse.csv").open()))
    assert rows[0] == ["model", "metric", "step", "readout", "block 1", "block 2", "block 3", "block 4"]
    assert [(r[0], r[1], r[2]) for r in rows[1:]] == [(m, k, "3") for m in ("mae_t", "layerlock_t", "latent_nofreeze_t")
                                                     for k in ("feat_std", "eff_rank")]
    assert all(float(v) > 0 for r in rows[1:] for v in r[3:])
    assert "latent_nofreeze_t" in capsys.readouterr().out


def test_collapse_names_the_missing_run_dir(runs, tmp_path, capsys):
    assert main(["collapse", "--runs", str(runs), "--models", "mae_t", "absent_t", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(runs / "absent_t") in err
