"""Every benchmark in sequence (``make bench``; its time is in docs/performance.md); ``--quick``: a smoke test.

    python -m benchmarks.run_all                      # tables on stdout, JSON in benchmarks/results/
    python -m benchmarks.run_all --quick --out-dir /tmp/bench

Each benchmark writes ``<out-dir>/<name>.json``; this script adds ``run_all.json`` with the
wall time of each and whether its goal was met, and exits non-zero if any benchmark failed.
"""
from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from tqdm import tqdm

from benchmarks.common import RESULTS, machine, table, write_json

BENCHMARKS = ("harness_overhead", "cached_vs_online", "world_generation", "mfu", "readout_mfu", "layerlock_savings",
              "demo_workers", "multiseed", "grid")


def run_one(name: str, quick: bool, out_dir: Path) -> dict[str, Any]:
    """Run ``benchmarks.<name>.main``; return its goal and wall time (or the error)."""
    argv = ["--out-dir", str(out_dir)] + (["--quick"] if quick else [])
    start = time.perf_counter()
    try:
        result = importlib.import_module(f"benchmarks.{name}").main(argv)
    except Exception as exc:  # one broken benchmark must not hide the others' figures
        traceback.print_exc()
        return {"name": name, "ok": False, "error": repr(exc), "seconds": time.perf_counter() - start}
    return {"name": name, "ok": True, "goal": result["goal"]["text"], "met": result["goal"]["met"],
            "seconds": time.perf_counter() - start}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="every benchmark in its seconds-long smoke mode")
    p.add_argument("--out-dir", type=Path, default=RESULTS)
    p.add_argument("--only", default=",".join(BENCHMARKS), help="comma-separated subset")
    args = p.parse_args(argv)
    names = args.only.split(",")
    summary = []
    for name in (bar := tqdm(names, desc="benchmarks", unit="bench", file=sys.stderr)):
        bar.set_postfix_str(name)
        print(f"\n=== {name} ===", flush=True)
        summary.append(run_one(name, args.quick, args.out_dir))
    rows = [[s["name"], f"{s['seconds']:.0f}", "error" if not s["ok"] else ("met" if s["met"] else "not met"),
             s.get("goal", s.get("error"))] for s in summary]
    print(table("Summary", ["benchmark", "seconds", "goal", "what"], rows))
    write_json(args.out_dir, "run_all", {"name": "run_all", "quick": args.quick, "benchmarks": summary,
                                         "seconds": sum(s["seconds"] for s in summary), "machine": machine()})
    return 0 if all(s["ok"] for s in summary) else 1


if __name__ == "__main__":
    sys.exit(main())
