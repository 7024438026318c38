"""Model FLOP utilisation of the encoder forward: achieved FLOP/s over this machine's matmul peak.

    python -m benchmarks.mfu                  # sizes t and s, 16 frames at 64x64 and 128x128, fp32
    python -m benchmarks.mfu --quick

FLOPs of one forward are counted with ``torch.utils.flop_counter.FlopCounterMode`` (matmuls and
the tubelet convolution), plus scaled-dot-product attention, which the counter does not see on
CPU (4·B·heads·N²·head_dim: QKᵀ and AV). The peak is a square fp32 ``torch.mm`` timed
interleaved with each forward, so both see the same load. bf16 (autocast forward, bf16 mm)
runs only on CUDA: bf16 on these CPUs is far slower than fp32 (docs/design.md §11).
Goal (docs/design.md §11): a ViT-S forward reaches >= 50% of the fp32 matmul peak.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from bench.models import build_encoder
from bench.models.vit import VideoViT
from benchmarks.common import interleave, median, parser, report, table

NAME = "mfu"
GOAL = 0.5


def _sdpa_flops(query: Any, key: Any, value: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    return sdpa_flop_count(query, key, value)


def forward_flops(model: VideoViT, x: torch.Tensor) -> int:
    """FLOPs of ``model(x)`` (one multiply-add = 2 FLOPs)."""
    cpu_sdpa = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu  # what SDPA decomposes to on CPU
    counter = FlopCounterMode(display=False, custom_mapping={cpu_sdpa: _sdpa_flops})
    with torch.inference_mode(), counter:
        model(x)
    return counter.get_total_flops()


def forward(model: VideoViT, x: torch.Tensor, dtype: torch.dtype) -> Callable[[], None]:
    """The encoder forward under inference mode (bf16: CUDA autocast)."""
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if dtype == torch.bfloat16 else contextlib.nullcontext()

    @torch.inference_mode()
    def run() -> None:
        with amp:
            model(x)
    return run


def matmul(n: int, dtype: torch.dtype, device: str) -> tuple[Callable[[], None], int]:
    """A square ``torch.mm`` of side ``n`` and its FLOPs."""
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    return (lambda: torch.mm(a, b)), 2 * n ** 3


def measure(size: str, res: int, frames: int, batch: int, dtype: torch.dtype, device: str, mm_n: int,
            repeats: int, warmup: int) -> dict[str, Any]:
    """Achieved forward FLOP/s, the interleaved matmul peak and their ratio for one configuration."""
    model, _ = build_encoder(f"random_{size}", img_size=res, num_frames=frames)
    x = torch.randn(batch, 3, frames, res, res)
    flops = forward_flops(model, x)
    model, x = model.to(device), x.to(device)
    peak_fn, peak_flops = matmul(mm_n, dtype, device)
    times = interleave({"forward": forward(model, x, dtype), "peak": peak_fn}, repeats, warmup,
                       desc=f"{size} {res}px {str(dtype)[6:]}")
    achieved, peak = flops / median(times["forward"]), peak_flops / median(times["peak"])
    return {"model": f"random_{size}", "resolution": res, "dtype": str(dtype)[6:], "device": device,
            "batch": batch, "gflop_per_clip": flops / batch / 1e9, "clips_s": batch / median(times["forward"]),
            "achieved_gflops": achieved / 1e9, "peak_gflops": peak / 1e9, "mfu": achieved / peak, "times_s": times}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = parser(__doc__)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--mm", type=int, default=2048, help="side of the square peak matmul")
    args = p.parse_args(argv)
    sizes, resolutions, frames, repeats, mm_n = (
        (("t",), (32,), 4, 1, 256) if args.quick else (("t", "s"), (64, 128), 16, args.repeats, args.mm))
    paths = [(torch.float32, "cpu")]
    if torch.cuda.is_available():
        paths.append((torch.bfloat16, "cuda"))
    rows = [measure(size, res, frames, args.batch, dtype, device, mm_n, repeats, warmup=0 if args.quick else 1)
            for dtype, device in paths for size in sizes for res in resolutions]
    bf16 = "measured on CUDA" if torch.cuda.is_available() else "skipped: no CUDA (bf16 matmul on CPU is far slower)"
    s_rows = [r for r in rows if r["model"] == "random_s" and r["dtype"] == "float32"]
    text = table(f"Encoder MFU: forward FLOP/s over the interleaved {mm_n}² matmul peak, {frames} frames, "
                 f"batch {args.batch}, median of {repeats}; bf16 {bf16}",
                 ["model", "res", "dtype", "GFLOP/clip", "clips/s", "GFLOP/s", "peak GFLOP/s", "MFU"],
                 [[r["model"], r["resolution"], r["dtype"], r["gflop_per_clip"], r["clips_s"], r["achieved_gflops"],
                   r["peak_gflops"], r["mfu"]] for r in rows])
    config = {"frames": frames, "batch": args.batch, "matmul_side": mm_n, "repeats": repeats, "bf16": bf16,
              "quick": args.quick}
    goal = {"text": f"ViT-S fp32 forward >= {GOAL:.0%} of the fp32 matmul peak", "target": GOAL,
            "met": bool(s_rows) and all(r["mfu"] >= GOAL for r in s_rows)}
    return report(NAME, config, rows, goal, args.out_dir, text)


if __name__ == "__main__":
    main()
