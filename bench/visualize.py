"""Feature pictures of one clip: the PCA-to-RGB and k-means maps of a frozen encoder's tokens.

    python -m bench.visualize --model NAME --clip SPEC [--out outputs/visualize] [--k 8] [--size 64]
                              [--frames 16] [--columns 4] [--checkpoints checkpoints] [--seed 0]
                              [--weights FILE] [--token-px N] [--device cpu]

Models resolve as in ``python -m bench.run`` (:func:`bench.models.build_encoder`): zoo names
(``random_t``; ``mae_t`` with ``--checkpoints leaderboard/checkpoints``), ``pixels``,
``timm/<arch>`` and checkpoint names; ``blind`` has no features. ``--clip`` is
``world:<split>:<index>`` (that clip of the synthetic world, rendered at ``--frames`` frames of
``--size`` pixels: the clip the dataset of those sizes holds) or a video file (``--frames`` frames
sampled uniformly, centre-cropped and resized to ``--size``; a shorter video repeats its last frame).

Both pictures are fitted on every token of the clip at the model's readout layer: a 3-component
PCA whose components become R, G and B (each stretched from its 1st to its 99th percentile to
0..255), and a seeded k-means whose clusters take fixed palette colours, numbered in order of first
appearance. Token maps cover their pixels (nearest neighbour) and a tubelet's time chunk covers its
frames. Writes ``<model>__<clip>.gif`` (frame | PCA | k-means for every frame) and
``<model>__<clip>.png`` (a contact sheet: those three rows at ``--columns`` frames) under ``--out``,
both or neither; the same inputs give the same bytes.
"""
from __future__ import annotations

import argparse
import io
import re
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from bench.errors import ConfigError, UserError

# Kelly-style distinct colours (the first ten as bench.data.visualize draws tracks), then ten more.
PALETTE = np.array([(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
                    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128),
                    (220, 190, 255), (170, 110, 40), (255, 250, 200), (128, 0, 0), (170, 255, 195),
                    (128, 128, 0), (255, 215, 180), (0, 0, 128), (128, 128, 128)], dtype=np.uint8)
PERCENTILES = (1.0, 99.0)  # the range of each principal component that spans 0..255
KMEANS_SEED, KMEANS_INITS = 0, 4
K = 8  # k-means clusters unless asked otherwise
DISPLAY = 192  # frames are enlarged (nearest neighbour) to about this many pixels a side
HEADER, GAP = 14, 4  # caption strip above each tile and space between tiles, in pixels
FRAME_MS = 150  # GIF frame duration
WORLD = "world:"


def parse_clip(spec: str) -> tuple[str, int] | Path:
    """(split, index) of a ``world:<split>:<index>`` spec; any other spec is a video path."""
    if not spec.startswith(WORLD):
        return Path(spec)
    from bench.data.world import SPLITS

    parts = spec.split(":")
    if len(parts) != 3 or parts[1] not in SPLITS or not parts[2].isdecimal():
        raise ConfigError(f"clip={spec!r}: expected world:<split>:<index> with split in {list(SPLITS)} and "
                          f"index an integer >= 0 (e.g. world:test:0), or a video file")
    return parts[1], int(parts[2])


def load_clip(spec: str, frames: int, size: int) -> np.ndarray:
    """The clip ``spec`` names: uint8 [frames, size, size, 3]."""
    where = parse_clip(spec)
    return video_file(where, frames, size) if isinstance(where, Path) else world_clip(spec, *where, frames, size)


def world_clip(spec: str, split: str, index: int, frames: int, size: int) -> np.ndarray:
    """Clip ``index`` of the synthetic world's ``split`` (a pure function of seed, split and index)."""
    from bench.data.world import WorldConfig, render_clip

    cfg = WorldConfig(num_frames=frames, resolution=size)
    if index >= cfg.size(split):
        raise ConfigError(f"clip={spec!r}: the world's {split!r} split has clips 0..{cfg.size(split) - 1}")
    return render_clip(cfg, split, index)["video"]


def video_file(path: Path, frames: int, size: int) -> np.ndarray:
    """``frames`` frames sampled uniformly from a video file, centre-cropped and resized to ``size``."""
    from bench.data.video_io import Resize, decode_frames, open_video, sample_indices

    reader, length = open_video(path)
    video = decode_frames(reader, sample_indices(length, frames, short_clip="pad", source=path), path)
    resize = Resize(tuple(video.shape[1:3]), (size, size))
    return np.stack([resize.image(frame) for frame in video])


def build_model(name: str, frames: int, size: int, checkpoints: str | Path = "checkpoints", seed: int = 0,
                weights: str | None = None, token_px: int | None = None) -> Any:
    """The encoder ``python -m bench.run model=<name>`` builds for clips of this size, in eval mode."""
    from bench.models import build_encoder
    from bench.registry import resolve_model

    if not resolve_model(name).has_encoder:
        raise ConfigError(f"model {name!r} has no features to picture: it is the task's input-blind answer")

    model, _ = build_encoder(name, checkpoints, seed=seed, weights=weights, img_size=size, num_frames=frames,
                             token_px=token_px)
    return model


def encode(model: Any, video: np.ndarray, device: str = "cpu") -> np.ndarray:
    """Readout-layer tokens of one uint8 clip [T, H, W, 3]: float32 [T', h, w, C]."""
    import torch

    from bench.models.vit import normalize_video

    grid = model.grid_for(*video.shape[:3])  # a size the tubelets do not tile is a ConfigError
    with torch.inference_mode():
        x = normalize_video(torch.from_numpy(np.ascontiguousarray(video[None])).to(device))
        feats = model.to(device).forward_layers(x, [model.readout_index])[0][0]
    return feats.float().cpu().numpy().reshape(*grid, -1)


def pca_colors(tokens: np.ndarray) -> np.ndarray:
    """RGB uint8 [N, 3] of tokens [N, C]: their first three principal components, each stretched
    from its 1st to 99th percentile to 0..255 (a constant component stays 0)."""
    from sklearn.decomposition import PCA

    n = min(3, *tokens.shape)
    comps = PCA(n_components=n, svd_solver="full").fit_transform(tokens.astype(np.float64))
    comps = np.pad(comps, ((0, 0), (0, 3 - n)))
    lo, hi = np.percentile(comps, PERCENTILES, axis=0)
    scaled = np.clip((comps - lo) / np.where(hi > lo, hi - lo, 1.0), 0.0, 1.0)
    return np.round(scaled * 255).astype(np.uint8)


def kmeans_labels(tokens: np.ndarray, k: int, seed: int = KMEANS_SEED) -> np.ndarray:
    """Cluster [N] of each token [N, C]: seeded k-means with at most ``k`` clusters (no more than
    the distinct tokens), numbered in order of first appearance so colours do not depend on luck."""
    from sklearn.cluster import KMeans

    data = tokens.astype(np.float64)
    k = min(k, len(np.unique(data, axis=0)))
    labels = KMeans(n_clusters=k, n_init=KMEANS_INITS, random_state=seed).fit_predict(data)
    found, first = np.unique(labels, return_index=True)
    order = np.zeros(labels.max() + 1, np.int64)
    order[found[np.argsort(first)]] = np.arange(len(found))
    return order[labels]


def feature_maps(features: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(PCA, k-means) colour maps uint8 [T', h, w, 3] of features [T', h, w, C], fitted on all tokens."""
    tokens, grid = features.reshape(-1, features.shape[-1]), features.shape[:-1]
    return pca_colors(tokens).reshape(*grid, 3), PALETTE[kmeans_labels(tokens, k)].reshape(*grid, 3)


def upsample(maps: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Token maps [T', h, w, 3] -> [T, H, W, 3] by nearest neighbour: each time chunk covers its
    T/T' frames and each token its block of pixels."""
    index = [np.arange(big) * small // big for big, small in zip(shape, maps.shape[:3])]
    return maps[np.ix_(*index)]


def display_scale(height: int, width: int) -> int:
    """Whole-number enlargement that brings a frame to about ``DISPLAY`` pixels a side."""
    return max(1, DISPLAY // max(height, width))


def strip(tiles: Sequence[np.ndarray], captions: Sequence[str], scale: int) -> Image.Image:
    """Images [H, W, 3] enlarged by ``scale`` side by side, each under its caption."""
    h, w = tiles[0].shape[:2]
    sheet = Image.new("RGB", (len(tiles) * (w * scale + GAP) - GAP, HEADER + h * scale), "white")
    draw, font = ImageDraw.Draw(sheet), ImageFont.load_default()
    for i, (tile, caption) in enumerate(zip(tiles, captions)):
        x = i * (w * scale + GAP)
        sheet.paste(Image.fromarray(tile).resize((w * scale, h * scale), Image.NEAREST), (x, HEADER))
        draw.text((x + 2, 1), caption, fill="black", font=font)
    return sheet


def stacked(rows: Sequence[Image.Image]) -> Image.Image:
    """Images of one width one above the other, ``GAP`` apart."""
    sheet = Image.new("RGB", (rows[0].width, sum(r.height + GAP for r in rows) - GAP), "white")
    for i, row in enumerate(rows):
        sheet.paste(row, (0, i * (row.height + GAP)))
    return sheet


def animation(video: np.ndarray, pca: np.ndarray, km: np.ndarray, k: int) -> bytes:
    """GIF bytes: frame | PCA | k-means for every frame, looping."""
    scale = display_scale(*video.shape[1:3])
    frames = [strip([video[t], pca[t], km[t]], [f"frame t={t}", "PCA", f"k-means k={k}"], scale)
              for t in range(len(video))]  # captions differ per frame: Pillow merges identical ones
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=FRAME_MS, loop=0)
    return buf.getvalue()


def contact_sheet(video: np.ndarray, pca: np.ndarray, km: np.ndarray, k: int, columns: int = 4) -> bytes:
    """PNG bytes: rows frame, PCA, k-means at ``columns`` evenly spaced frames."""
    ts = np.unique(np.linspace(0, len(video) - 1, columns).round().astype(int))
    scale = display_scale(*video.shape[1:3])
    rows = [strip([images[t] for t in ts], [f"{what} t={t}" for t in ts], scale)
            for images, what in ((video, "frame"), (pca, "PCA"), (km, f"k-means k={k}"))]
    buf = io.BytesIO()
    stacked(rows).save(buf, format="PNG")
    return buf.getvalue()


def file_stem(model: str, spec: str) -> str:
    """``<model>__<clip>`` (a video: its file stem), every character outside [A-Za-z0-9._-] as '-'."""
    clip = spec if spec.startswith(WORLD) else Path(spec).stem
    return re.sub(r"[^A-Za-z0-9._-]", "-", f"{model}__{clip}")


def write(out: Path, stem: str, files: dict[str, bytes]) -> list[Path]:
    """Write ``<out>/<stem><suffix>`` for every suffix together (temp files, then renames)."""
    from bench.files import atomic_write_files

    paths = {Path(out) / f"{stem}{suffix}": data for suffix, data in files.items()}
    try:
        Path(out).mkdir(parents=True, exist_ok=True)
        atomic_write_files(paths)
    except OSError as exc:
        raise UserError(f"out={out}: cannot write the pictures ({exc.strerror or exc})") from None
    return list(paths)


def clip_maps(encoder: Any, model: str, clip: str, frames: int, size: int, k: int = K,
              device: str = "cpu") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(clip, PCA map, k-means map), each uint8 [T, H, W, 3], of ``encoder`` (named ``model``) on ``clip``:
    what both pictures draw, so that a caller can draw either."""
    video = load_clip(clip, frames, size)
    features = encode(encoder, video, device)
    if not np.isfinite(features).all():
        from bench.features import FeatureError
        raise FeatureError(f"model {model!r} on clip {clip!r}: features contain NaN or Inf")
    pca, km = (upsample(m, video.shape[:3]) for m in feature_maps(features, k))
    return video, pca, km


def visualize(model: str, clip: str, out: str | Path = "outputs/visualize", k: int = K, size: int = 64,
              frames: int = 16, columns: int = 4, checkpoints: str | Path = "checkpoints", seed: int = 0,
              weights: str | None = None, token_px: int | None = None, device: str = "cpu") -> list[Path]:
    """Write the GIF and contact sheet of ``model`` on ``clip``; returns their paths."""
    if not 1 <= k <= len(PALETTE):
        raise ConfigError(f"k={k}: expected an integer in 1..{len(PALETTE)} (one palette colour per cluster)")
    parse_clip(clip)  # a bad spec fails before any model is built
    encoder = build_model(model, frames, size, checkpoints, seed, weights, token_px)
    video, pca, km = clip_maps(encoder, model, clip, frames, size, k, device)
    return write(Path(out), file_stem(model, clip), {".gif": animation(video, pca, km, k),
                                                     ".png": contact_sheet(video, pca, km, k, columns)})


def count(low: int, high: int | None = None):
    """An argparse type: an integer in low..high."""
    def parse(text: str) -> int:
        value = int(text) if re.fullmatch(r"[+-]?\d+", text.strip()) else None
        if value is None or value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer in {low}..{high or 'inf'}")
        return value
    return parse


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.visualize", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="as bench.run's model=: random_t, pixels, timm/<arch>, a checkpoint")
    p.add_argument("--clip", required=True, help="world:<split>:<index> (e.g. world:test:0) or a video file")
    p.add_argument("--out", type=Path, default=Path("outputs/visualize"), help="output directory")
    p.add_argument("--k", type=count(1, len(PALETTE)), default=K, help=f"k-means clusters (default {K})")
    p.add_argument("--size", type=count(1), default=64, help="frame side in pixels (default 64)")
    p.add_argument("--frames", type=count(1), default=16, help="frames of the clip (default 16)")
    p.add_argument("--columns", type=count(1), default=4, help="frames on the contact sheet (default 4)")
    p.add_argument("--checkpoints", default="checkpoints", help="checkpoint directory (bench.run's paths.checkpoints)")
    p.add_argument("--seed", type=int, default=0, help="weights of random encoders (bench.run's model_seed)")
    p.add_argument("--weights", default=None, help="weights file of a timm/<arch> model (bench.run's model.weights)")
    p.add_argument("--token-px", type=count(1), default=None, help="frame models' clip pixels per token")
    p.add_argument("--device", default="cpu")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        paths = visualize(args.model, args.clip, args.out, args.k, args.size, args.frames, args.columns,
                          args.checkpoints, args.seed, args.weights, args.token_px, args.device)
    except UserError as exc:  # a bad input: one line; anything else is a bug and keeps its traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
