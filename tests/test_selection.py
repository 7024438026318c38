"""Records of probe grids: their ``selection`` block is validated, and the leaderboard draws their
layer curves from the head best on the held-out clips at each depth."""
from __future__ import annotations

import pytest

from bench.results import RecordError, write_record
from leaderboard.aggregate import aggregate
from leaderboard.plots import plot_paths, plots
from leaderboard.tables import summary
from tests.test_leaderboard import record


def head(layer: int, lr: float, val: float, test: float) -> dict:
    return {"layer": layer, "depth": layer / 8, "lr": lr, "weight_decay": 0.05, "val": val, "test": test}


def selected(model: str, seed: int, heads: list[dict], chosen: int) -> object:
    test = heads[chosen]["test"]
    best = max(range(len(heads)), key=lambda i: heads[i]["test"])
    return record("action", model, seed, {"top1": test, "loss": 1.0}, per_clip={"values": [test], "weights": [1.0]},
                  selection={"metric": "top1", "higher_is_better": True, "val_fraction": 0.2, "val_clips": 5,
                             "heads": heads, "chosen": chosen, "best_on_test": best})


def test_layer_curves_take_the_best_held_out_head_per_depth_averaged_over_seeds():
    seed0 = [head(2, 1e-3, 0.40, 0.30), head(2, 3e-3, 0.50, 0.20), head(6, 1e-3, 0.60, 0.55), head(6, 3e-3, 0.55, 0.65)]
    seed1 = [head(2, 1e-3, 0.30, 0.40), head(2, 3e-3, 0.20, 0.10), head(6, 1e-3, 0.70, 0.45), head(6, 3e-3, 0.10, 0.90)]
    one_layer = [head(6, 1e-3, 0.5, 0.5), head(6, 3e-3, 0.6, 0.4)]
    records = [(f"{m}{s}.json", r) for m, s, r in (("mae_t", 0, selected("mae_t", 0, seed0, 2)),
                                                   ("mae_t", 1, selected("mae_t", 1, seed1, 2)),
                                                   ("random_t", 0, selected("random_t", 0, one_layer, 1)))]
    lb, _ = aggregate(records)
    # depth 0.25: seed 0's best held-out head is lr 3e-3 (val 0.5, test 0.2), seed 1's lr 1e-3 (0.3, 0.4)
    # depth 0.75: both seeds' lr 1e-3 heads (0.6, 0.55) and (0.7, 0.45)
    curve = lb.curves[("action", "synthetic", "attentive")]["mae_t"]
    assert curve == [pytest.approx((0.25, 0.4, 0.3)), pytest.approx((0.75, 0.65, 0.5))]
    assert "random_t" not in lb.curves[("action", "synthetic", "attentive")]  # one layer: no curve
    assert lb.n_selected == 3 and "In 3 of them each row's readout head was chosen" in summary(lb)
    assert "plots/layers__action__synthetic.png" in plot_paths(lb)
    assert plots(lb)["plots/layers__action__synthetic.png"].startswith(b"\x89PNG")


@pytest.mark.parametrize("selection,problem", [
    ({"heads": []}, "non-empty list of heads"),
    ({"heads": [head(2, 1e-3, float("nan"), 0.3)], "chosen": 0, "best_on_test": 0}, "not finite"),
    ({"heads": [head(2, 1e-3, 0.4, 0.3)], "chosen": 1, "best_on_test": 0}, "chosen 1 is not the index"),
    ({"heads": [head(2, 1e-3, 0.4, 0.3)], "chosen": 0}, "best_on_test None is not the index"),
])
def test_a_record_with_a_bad_selection_block_is_refused(tmp_path, selection, problem):
    r = record("action", "mae_t", 0, {"top1": 0.3, "loss": 1.0}, per_clip={"values": [0.3], "weights": [1.0]},
               selection=selection)
    with pytest.raises(RecordError, match=problem):
        write_record(r, tmp_path)
    assert list(tmp_path.iterdir()) == []
