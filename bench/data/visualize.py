"""Look at synthetic-world clips: a PNG contact sheet and an animated GIF with tracks and boxes.

    python -m bench.data.visualize --out DIR [--n 4] [--resolution 64] [--frames 16] [--split train]

Tracks are drawn filled where visible and hollow where occluded (off-screen points are skipped).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw

from bench.data.world import LABEL_NAMES, WorldConfig, render_clip

_COLORS = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212)]


def annotate(clip: dict[str, Any], t: int, scale: int = 4) -> Image.Image:
    """Frame t upscaled, with every track point and every valid object box drawn on it."""
    frame = Image.fromarray(clip["video"][t]).resize((clip["video"].shape[2] * scale,) * 2, Image.NEAREST)
    draw = ImageDraw.Draw(frame)
    for m, (box, valid) in enumerate(zip(clip["boxes"][:, t], clip["box_valid"][:, t])):
        if valid:
            draw.rectangle(list(box * scale), outline=_COLORS[-1 - m % 4], width=max(1, scale // 2))
    for n, ((x, y), occluded) in enumerate(zip(clip["target_points"][:, t], clip["occluded"][:, t])):
        if 0 <= x < frame.width / scale and 0 <= y < frame.height / scale:
            r, color = max(2, scale), _COLORS[n % 6]
            draw.ellipse([x * scale - r, y * scale - r, x * scale + r, y * scale + r],
                         fill=None if occluded else color, outline=color)
    return frame


def contact_sheet(clips: Sequence[dict[str, Any]], path: Path, columns: int = 4) -> Path:
    """Rows = clips; columns = a few annotated RGB frames, then the same frames' depth."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frames = np.linspace(0, len(clips[0]["video"]) - 1, columns).round().astype(int)
    fig, axes = plt.subplots(len(clips), 2 * columns, figsize=(2 * columns * 1.6, len(clips) * 1.75), squeeze=False)
    for row, clip in zip(axes, clips):
        valid = clip["depth"][clip["depth"] > 0]
        for ax, t in zip(row, frames):
            ax.imshow(annotate(clip, t))
            ax.set_title(f"t={t}", fontsize=7)
        for ax, t in zip(row[columns:], frames):
            ax.imshow(clip["depth"][t], cmap="turbo", vmin=valid.min(), vmax=valid.max())
            ax.set_title(f"depth t={t}", fontsize=7)
        row[0].set_ylabel(LABEL_NAMES[clip["label"]], fontsize=7)
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def animation(clips: Sequence[dict[str, Any]], path: Path, scale: int = 3) -> Path:
    """An animated GIF showing all clips side by side, annotated, looping."""
    frames = []
    for t in range(len(clips[0]["video"])):
        tiles = [annotate(clip, t, scale) for clip in clips]
        sheet = Image.new("RGB", (sum(tile.width for tile in tiles), tiles[0].height))
        for i, tile in enumerate(tiles):
            sheet.paste(tile, (i * tile.width, 0))
        frames.append(sheet)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=120, loop=0)
    return path


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--n", type=int, default=4, help="clips")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--split", default="train")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--start", type=int, default=0, help="index of the first clip")
    args = parser.parse_args(argv)
    cfg = WorldConfig(num_frames=args.frames, resolution=args.resolution, seed=args.seed)
    clips = [render_clip(cfg, args.split, i) for i in range(args.start, args.start + args.n)]
    args.out.mkdir(parents=True, exist_ok=True)
    print(contact_sheet(clips, args.out / "world_contact_sheet.png"))
    print(animation(clips, args.out / "world.gif"))


if __name__ == "__main__":
    main()
