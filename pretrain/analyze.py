"""Analysis tools to run on your own models (``python -m pretrain.analyze <tool> ...``).

- ``convergence [overrides]``: the LayerLock layer-convergence probe (``pretrain.convergence``):
  freeze blocks 1..L of an MAE run at step T, continue, and compare the final loss with the
  unfrozen run. Overrides are hydra-style: pretrain-config keys (``model=mae_t train.steps=600
  data.name=synthetic``) and probe knobs (``probe.at=[0,0.5] probe.blocks=[1,3] probe.tail=0.1
  probe.out=DIR``). The defaults are a CPU miniature (``pretrain.convergence.MINIATURE``).
- ``collapse [--runs DIR] [--out DIR] [--models A B ...]``: feature std and effective rank over
  training, per block, of finished or running pretraining runs (``pretrain.collapse``), read
  from their ``metrics.jsonl``; one plot and a table of end values.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.errors import UserError
from pretrain import collapse, convergence

USAGE = "usage: python -m pretrain.analyze {convergence [key=value ...] | collapse [--runs DIR] [--out DIR]}"


def collapse_main(args: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m pretrain.analyze collapse",
                                     description="per-block feature std and effective rank of pretraining runs")
    parser.add_argument("--runs", default="outputs/pretrain", help="directory holding <model>/metrics.jsonl")
    parser.add_argument("--out", default="outputs/analyze/collapse", help="where the plot and table go")
    parser.add_argument("--models", nargs="+", default=list(collapse.COMPARED), help="run names to compare")
    a = parser.parse_args(args)
    runs = collapse.read_runs(Path(a.runs), a.models)
    out = Path(a.out)
    print(collapse.write_report(runs, out), end="")
    print(f"wrote {out}/collapse.png, collapse.csv, collapse.md")


def main(argv: list[str]) -> int:
    tools = {"convergence": convergence.main, "collapse": collapse_main}
    if not argv or argv[0] not in tools:
        print(USAGE, file=sys.stderr)
        return 2
    try:
        tools[argv[0]](argv[1:])
    except UserError as exc:  # a bad input: one line; a bug keeps its traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
