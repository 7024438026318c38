"""Records of probe grids: their ``selection`` block is validated, and the leaderboard names each
row's chosen head and draws layer curves from the head best on the held-out clips at each depth."""
from __future__ import annotations

import csv
import io

import pytest

from bench.results import RecordError, write_record
from leaderboard.aggregate import aggregate
from leaderboard.plots import plot_paths, plots
from leaderboard.tables import markdown, summary, tidy_csv
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


def test_a_task_table_names_each_rows_chosen_head_and_the_test_best_apart():
    """The head column shows the grid axes that vary; the head best on the test split only in
    parentheses where it differs; one-head records are ``fixed`` and a row without features ``—``."""
    agree = [head(2, 1e-3, 0.40, 0.30), head(6, 1e-3, 0.60, 0.55), head(6, 3e-3, 0.50, 0.45)]
    differ = [head(2, 1e-3, 0.40, 0.70), head(6, 1e-3, 0.60, 0.55)]
    records = [("a.json", selected("mae_t", 0, agree, 1)), ("b.json", selected("layerlock_t", 0, differ, 1)),
               ("c.json", record("action", "random_t", 0, {"top1": 0.2, "loss": 1.0})),
               ("d.json", record("action", "blind", 0, {"top1": 0.1, "loss": 1.0}))]
    lb, _ = aggregate(records)
    heads = {g.model: g.head for g in lb.groups}
    assert heads == {"mae_t": "layer 6, lr 0.001", "layerlock_t": "layer 6 (best on test: layer 2)",
                     "random_t": "fixed", "blind": "—"}
    md = markdown(lb, [])
    assert "| head (held-out choice) |" in md and "| layer 6 (best on test: layer 2) |" in md
    rows = list(csv.DictReader(io.StringIO(tidy_csv(lb))))
    assert {r["model"]: r["head"] for r in rows} == heads


def test_seeds_that_choose_different_heads_are_each_named():
    seed0 = [head(2, 1e-3, 0.40, 0.30), head(6, 1e-3, 0.60, 0.55)]
    seed1 = [head(2, 1e-3, 0.70, 0.30), head(6, 1e-3, 0.60, 0.55)]
    lb, _ = aggregate([("a.json", selected("mae_t", 0, seed0, 1)), ("b.json", selected("mae_t", 1, seed1, 0))])
    assert lb.groups[0].head == "layer 6 / layer 2 (best on test: layer 6)"


def test_a_board_of_fixed_probes_says_so():
    lb, _ = aggregate([("a.json", record("action", "mae_t", 0, {"top1": 0.3, "loss": 1.0}))])
    assert "a fixed probe" in summary(lb) and "head (held-out choice)" not in markdown(lb, [])


def test_a_closed_form_head_is_named_layer_first():
    heads = [dict(head(2, 1e-3, 0.4, 0.3), alpha=0.1), dict(head(6, 1e-3, 0.6, 0.5), alpha=10.0)]
    lb, _ = aggregate([("a.json", selected("mae_t", 0, [{k: h[k] for k in sorted(h)} for h in heads], 1))])
    assert lb.groups[0].head == "layer 6, alpha 10"
