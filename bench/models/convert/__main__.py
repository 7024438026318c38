"""``python -m bench.models.convert <kind> <in> <out.safetensors> [options]`` (see the package doc)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.errors import UserError
from bench.models.convert import KINDS, convert


def positive(text: str) -> int:
    """An argparse type: an integer >= 1 (a size, a frame or head count)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer >= 1")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.models.convert",
                                     description="Convert a public video-encoder checkpoint to a frozen4d checkpoint.")
    parser.add_argument("kind", choices=sorted(KINDS), help="source checkpoint family")
    parser.add_argument("src", type=Path, help="input file (.pth/.pt for videomae, vjepa and vjepa2, .npz for 4ds, "
                                               ".onnx for onnx-dinov2) or save_pretrained folder (hf-videomae, "
                                               "hf-vjepa2)")
    parser.add_argument("out", type=Path, help="output .safetensors (the .json sidecar goes next to it)")
    parser.add_argument("--img-size", type=positive, default=None,
                        help="frame size: videomae builds its position table for it (default 224; hf-videomae: "
                             "the config's image_size); vjepa: the pretraining size (default: inferred); 4ds: "
                             "resample the learned table to it; vjepa2, hf-vjepa2: nominal only (RoPE)")
    parser.add_argument("--num-frames", type=positive, default=None,
                        help="clip length, as --img-size (default 16; 4ds: the table's own; hf-*: the config's)")
    parser.add_argument("--num-heads", type=positive, default=None,
                        help="attention heads (default: the standard ViT head count for the width; 4ds: read "
                             "from the weights; hf-*: the config's)")
    parser.add_argument("--checkpoint-key", default=None,
                        help="vjepa, vjepa2: which encoder of a training checkpoint (default target_encoder, "
                             "then encoder)")
    args = parser.parse_args(argv)
    try:
        model, sha = convert(args.kind, args.src, args.out, img_size=args.img_size, num_frames=args.num_frames,
                             num_heads=args.num_heads, checkpoint_key=args.checkpoint_key)
    except UserError as exc:  # a ConversionError naming the file, or a ConfigError naming the value
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # the output is written atomically: nothing of this conversion is kept
        print(f"interrupted: {args.out} was not written (any earlier file there is unchanged)", file=sys.stderr)
        return 130
    print(f"{args.kind} {args.src} -> {args.out}")
    if isinstance(model, dict):
        print(f"  timm {model['timm']}: {model['embed_dim']} wide, {model['depth']} blocks, {model['num_heads']} heads,"
              f" patch {model['patch_size']}, run frame by frame")
    else:
        c = model.cfg
        print(f"  ViT {c.embed_dim} wide, {c.depth} blocks, {c.num_heads} heads, MLP {c.mlp_dim}, tubelet "
              f"{'x'.join(map(str, c.patch_size))}, built for {c.num_frames}x{c.img_size}x{c.img_size} clips")
    print(f"  sha256 {sha}")
    print(f"  use: python -m bench.run model.name={args.out.stem} paths.checkpoints={args.out.parent}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
