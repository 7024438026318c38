"""LayerLock compute and memory savings: measured step time and peak memory vs predicted FLOPs.

    python -m benchmarks.layerlock_savings                 # size t, 16x64x64, batch 8 (CPU, ~3 min)
    python -m benchmarks.layerlock_savings --size s --resolution 224 --batch 4 --device cuda
    python -m benchmarks.layerlock_savings --quick         # smoke: 2 configurations, tiny clips

Every configuration runs in its own subprocess (peak memory on CPU: the peak resident set
(``VmHWM``), reset just before the first step, minus the resident set then — a plain
``ru_maxrss`` delta reads 0 whenever start-up peaked higher than the steps; on CUDA
``max_memory_allocated`` minus the memory held before the first step), on the same
architecture (the ``layerlock_<size>`` ViT with 3D RoPE), with the same masks and batches:

- ``mae``           SimpleMAE step (nothing frozen);
- ``freeze+pixel``  progressive freezing with the pixel loss (the accelerated MAE of the paper's
                    first contribution): frozen prefix forward-only on the visible tokens;
- ``layerlock``     latent phase: as above plus the no-grad target pass of the frozen prefix on
                    the full clip (``frozen_input=visible``, the default);
- ``layerlock-reuse`` latent phase with ``frozen_input=reuse`` (prefix run once on all tokens).

Frozen fractions 0, 1/3 and 2/3 of the depth (capped by the recipe's ``max_frozen_blocks``).
Predicted savings come from :mod:`pretrain.flops` (frozen prefix: 1× forward instead of 3×);
``--schedule`` additionally measures every phase of the recipe's schedule and compares the
whole-run time saving with the schedule's predicted FLOP saving. Prints a table, writes
``benchmarks/results/layerlock_savings.json``. Goal: the measured time saving of the latent
phase at 2/3 frozen reaches >= 80% of the predicted FLOP saving.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from bench.models.vit import VideoViT, normalize_video
from bench.registry import resolve_model
from benchmarks.common import RESULTS, machine, write_json
from pretrain.flops import schedule_flops, step_flops
from pretrain.layerlock import PIXEL, Phase, Schedule
from pretrain.masking import random_masking
from pretrain.model import build_pretrain_model
from pretrain.optim import build_optimizer
from pretrain.recipes import resolve_recipe


VARIANTS = ("freeze+pixel", "layerlock", "layerlock-reuse")
GOAL = 0.8


def setup(spec: dict):
    name = f"layerlock_{spec['size']}"
    arch = resolve_model(name).architecture(img_size=spec["resolution"], num_frames=spec["frames"])
    overrides = {"frozen_input": spec.get("frozen_input", "visible"), "freeze_target": "latent",
                 "latent_targets": "newest"}
    recipe = resolve_recipe(name, arch.depth, overrides)
    return arch, recipe


def proc_status(field: str) -> int:
    """A memory field of /proc/self/status (``VmRSS``, ``VmHWM``), in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field} (peak memory on CPU needs Linux)")


def reset_peak_rss() -> int:
    """Reset this process's peak resident set to its current one (Linux ``clear_refs`` 5); return it."""
    Path("/proc/self/clear_refs").write_text("5")
    return proc_status("VmRSS")


def worker(spec: dict) -> dict:
    """Time ``spec['steps']`` training steps of one phase; report time, memory and FLOPs."""
    device = torch.device(spec["device"])
    torch.manual_seed(0)
    arch, recipe = setup(spec)
    model = build_pretrain_model(VideoViT(arch), recipe, Schedule.from_recipe(recipe)).to(device)
    phase = Phase.from_dict(spec["phase"])
    model.set_phase(phase)
    opt = build_optimizer(model, recipe, fused=device.type == "cuda")
    grid = model.encoder.grid_for(spec["frames"], spec["resolution"], spec["resolution"])
    tokens, batch = math.prod(grid), spec["batch"]
    gen = torch.Generator().manual_seed(0)
    video = normalize_video(torch.randint(0, 256, (batch, spec["frames"], spec["resolution"], spec["resolution"], 3),
                                          dtype=torch.uint8, generator=gen)).to(device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def step() -> None:
        keep, mask = random_masking(batch, tokens, recipe["mask_ratio"], gen)
        with autocast:
            loss = model(video, keep.to(device), mask.to(device), phase)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = reset_peak_rss()
    times = []
    for i in range(spec["warmup"] + spec["steps"]):
        sync()
        t0 = time.perf_counter()
        step()
        sync()
        if i >= spec["warmup"]:
            times.append(time.perf_counter() - t0)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = proc_status("VmHWM") - base
    return {"step_time": statistics.median(times), "peak_mem_bytes": int(peak),
            "flops": step_flops(arch, recipe, phase, batch, tokens)["total"],
            "trainable_params": sum(p.numel() for g in opt.param_groups for p in g["params"])}


def run_worker(spec: dict) -> dict:
    out = subprocess.run([sys.executable, "-m", "benchmarks.layerlock_savings", "--worker", json.dumps(spec)],
                         capture_output=True, text=True, check=False)
    if out.returncode:
        raise RuntimeError(f"worker {spec} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="t")
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=8, help="timed steps per configuration (median)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2, help="rounds over all configurations; the fastest counts")
    p.add_argument("--device", default="auto")
    p.add_argument("--schedule", action=argparse.BooleanOptionalAction, default=True,
                   help="also measure every phase of the recipe's schedule (whole-run saving)")
    p.add_argument("--quick", action="store_true", help="smoke: mae and layerlock at 1/3 frozen, 4x32x32, one step")
    p.add_argument("--out-dir", type=Path, default=RESULTS, help="where layerlock_savings.json goes")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return {}
    if args.quick:
        args.resolution, args.frames, args.batch, args.steps, args.warmup, args.repeats = 32, 4, 2, 1, 0, 1
        args.schedule = False
    variants = VARIANTS[1:2] if args.quick else VARIANTS
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else \
        ("cpu" if args.device == "auto" else args.device)
    base = dict(size=args.size, resolution=args.resolution, frames=args.frames, batch=args.batch, steps=args.steps,
                warmup=args.warmup, device=device)
    arch, recipe = setup(base)
    depth, most = arch.depth, recipe["max_frozen_blocks"]
    fractions = {"1/3": min(most, round(depth / 3)), "2/3": min(most, round(2 * depth / 3))}
    if args.quick:
        del fractions["2/3"]
    pt, ph_, pw = arch.patch_size
    tokens = (args.frames // pt) * (args.resolution // ph_) * (args.resolution // pw)

    def phase_of(variant: str, frozen: int) -> Phase:
        if variant == "mae" or frozen == 0:
            return PIXEL
        return Phase(frozen, "pixel", ()) if variant == "freeze+pixel" else Phase(frozen, "latent", (frozen - 1,))

    def key(variant: str, frozen: int) -> tuple[str, int]:
        return ("mae", 0) if frozen == 0 else (variant, frozen)

    wanted = [("mae", 0)] + [key(v, f) for v in variants for f in fractions.values()]
    if args.schedule:
        wanted += [key(v, f) for v in VARIANTS[:2] for f in range(most + 1)]
    wanted = list(dict.fromkeys(wanted))
    samples: dict[tuple, list[dict]] = {k: [] for k in wanted}
    for rep in range(args.repeats):  # round-robin, rotated: interference spreads over configurations
        order = wanted[rep % len(wanted):] + wanted[:rep % len(wanted)]
        for variant, frozen in order:
            spec = dict(base, phase=phase_of(variant, frozen).to_dict(),
                        frozen_input="reuse" if variant == "layerlock-reuse" else "visible")
            samples[(variant, frozen)].append(run_worker(spec))
            print(f"  [{rep + 1}/{args.repeats}] {variant:16s} frozen={frozen:2d}: "
                  f"{samples[(variant, frozen)][-1]['step_time'] * 1e3:8.1f} ms/step", file=sys.stderr)
    # fastest repeat per configuration (timing noise on shared CPUs only ever adds time)
    results = {k: min(v, key=lambda r: r["step_time"]) | {"peak_mem_bytes": min(r["peak_mem_bytes"] for r in v)}
               for k, v in samples.items()}

    mae = results[("mae", 0)]
    rows = [dict(variant="mae", fraction="0", frozen=0, **mae)]
    for variant in variants:
        for frac, frozen in fractions.items():
            rows.append(dict(variant=variant, fraction=frac, frozen=frozen, **results[key(variant, frozen)]))
    for row in rows:
        row["predicted_saving"] = 1 - row["flops"] / mae["flops"]
        row["time_saving"] = 1 - row["step_time"] / mae["step_time"]
        row["mem_saving"] = 1 - row["peak_mem_bytes"] / mae["peak_mem_bytes"] if mae["peak_mem_bytes"] > 0 else None
        row["measured_over_predicted"] = (row["time_saving"] / row["predicted_saving"]
                                          if abs(row["predicted_saving"]) > 1e-9 else None)

    schedule = []
    if args.schedule:
        for variant, target in (("freeze+pixel", "pixel"), ("layerlock", "latent")):
            r = dict(recipe, freeze_target=target)
            plan = Schedule.from_recipe(r)
            run_time = sum((b - a) * results[key(variant, ph.frozen)]["step_time"] for a, b, ph in plan.segments())
            pred = schedule_flops(arch, r, plan, args.batch, tokens)["saving"]
            meas = 1 - run_time / (r["steps"] * mae["step_time"])
            schedule.append({"variant": variant, "recipe": f"layerlock_{args.size}", "steps": r["steps"],
                             "pixel_steps": r["pixel_steps"], "freeze_interval": r["freeze_interval"],
                             "max_frozen_blocks": r["max_frozen_blocks"], "predicted_saving": pred,
                             "time_saving": meas, "measured_over_predicted": meas / pred if abs(pred) > 1e-9 else None})

    print(f"\nLayerLock savings: layerlock_{args.size} ({depth} blocks, decoder {recipe['decoder_depth']}), "
          f"{args.frames}x{args.resolution}x{args.resolution}, batch {args.batch}, mask {recipe['mask_ratio']}, {device}")
    head = f"{'variant':16s} {'frac':>4s} {'F':>3s} {'ms/step':>9s} {'GFLOP':>8s} {'pred.sav':>9s} " \
           f"{'time.sav':>9s} {'meas/pred':>9s} {'peak MB':>9s} {'mem.sav':>8s}"
    print(head + "\n" + "-" * len(head))
    fmt = lambda v, spec="+7.1%": "n/a" if v is None else format(v, spec)  # noqa: E731
    for row in rows:
        print(f"{row['variant']:16s} {row['fraction']:>4s} {row['frozen']:3d} {row['step_time'] * 1e3:9.1f} "
              f"{row['flops'] / 1e9:8.2f} {fmt(row['predicted_saving']):>9s} {fmt(row['time_saving']):>9s} "
              f"{fmt(row['measured_over_predicted'], '.2f'):>9s} {row['peak_mem_bytes'] / 2**20:9.1f} "
              f"{fmt(row['mem_saving']):>8s}")
    for s in schedule:
        print(f"\nwhole run of {s['recipe']} ({s['variant']}: {s['steps']} steps, pixel {s['pixel_steps']}, "
              f"+1 block / {s['freeze_interval']} steps to {s['max_frozen_blocks']}): predicted FLOP saving "
              f"{fmt(s['predicted_saving'])}, measured time saving {fmt(s['time_saving'])}, "
              f"ratio {fmt(s['measured_over_predicted'], '.2f')}")
    goal_row = next(r for r in rows if r["variant"] == "layerlock" and r["fraction"] == max(fractions))
    met = (goal_row["measured_over_predicted"] or 0) >= GOAL
    goal = {"text": f"layerlock at {goal_row['fraction']} frozen: measured time saving >= {GOAL:.0%} of predicted",
            "target": GOAL, "met": met}
    print(f"goal: {goal['text']} -> {'met' if met else 'NOT met'}")
    report = {"name": "layerlock_savings",
              "config": {**base, "repeats": args.repeats, "depth": depth, "decoder_depth": recipe["decoder_depth"],
                         "mask_ratio": recipe["mask_ratio"], "arch": arch.to_dict(), "quick": args.quick},
              "rows": rows, "schedule": schedule, "goal": goal, "machine": machine(),
              "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    print(f"written: {write_json(args.out_dir, 'layerlock_savings', report)}\n")
    return report


if __name__ == "__main__":
    main()
