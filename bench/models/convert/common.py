"""What every converter shares: safe readers, key/shape checks with one-line errors, weight
folding, and the writer that stamps the source into the sidecar.

Readers never execute code from a file: ``.pt``/``.pth`` go through
``torch.load(weights_only=True)`` (plus ``argparse.Namespace``, a plain attribute bag that
VideoMAE-style training checkpoints store under ``args``), ``.npz`` through
``np.load(allow_pickle=False)``. Every error is a :class:`ConversionError` whose message is one
line that starts with the path of the input (or output) file it is about.
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F

from bench.errors import CheckpointError
from bench.files import sha256_file
from bench.models.checkpoint import readable_file, save_checkpoint, sidecar_path, torch_load_problem

from bench.models.vit import IMAGENET_MEAN, IMAGENET_STD, ViTConfig, VideoViT

# heads of the standard ViT widths (head dim 64, 80 for H, 88 for g, 104 for G): the public
# checkpoints' weights do not record the head count (4DS's do: it is read from the kernels)
HEADS_BY_WIDTH = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16, 1408: 16, 1664: 16, 1792: 16}


class ConversionError(CheckpointError):
    """A source checkpoint that cannot be converted; the message names the file."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (every conversion error is one line)."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else ""


def read_torch(path: Path) -> Any:
    """The object in a ``.pt``/``.pth`` file, unpickled with ``weights_only=True`` (tensors,
    containers, numbers, strings, and ``argparse.Namespace``). Anything else is refused unrun."""
    path = readable_file(path, "a .pt/.pth checkpoint file", ConversionError)
    allow = [argparse.Namespace]
    try:
        if hasattr(torch.serialization, "safe_globals"):
            with torch.serialization.safe_globals(allow):
                return torch.load(path, map_location="cpu", weights_only=True)
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle payloads with non-allowlisted globals, truncated or foreign files
        raise ConversionError(f"{path}: refused or unreadable: {torch_load_problem(exc)}") from exc


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` archive, read with ``allow_pickle=False``."""
    path = readable_file(path, "an .npz parameter file", ConversionError)
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {k: np.asarray(archive[k]) for k in archive.files}
    except Exception as exc:  # not a zip, object arrays (need pickle), truncated members
        raise ConversionError(f"{path}: unreadable as a numpy .npz archive "
                              f"({type(exc).__name__}: {first_line(exc)})") from exc


def select_prefix(path: Path, state: dict[str, Any], marker: str) -> tuple[dict[str, torch.Tensor], str]:
    """Keep the tensors under the one prefix that holds ``marker`` (e.g. ``encoder.`` or
    ``module.backbone.``) and strip it; returns (state, prefix)."""
    hits = sorted(k[: -len(marker)] for k in state if k.endswith(marker) and torch.is_tensor(state[k]))
    if not hits:
        some = ", ".join(list(state)[:5]) or "(no keys)"
        raise ConversionError(f"{path}: missing key '{marker}' (under any prefix); the file has: {some}, ...")
    if len(hits) > 1:
        raise ConversionError(f"{path}: several encoders hold '{marker}' (prefixes {hits}); "
                              f"keep one in the file")
    prefix = hits[0]
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix) and torch.is_tensor(v)}, prefix


class Params:
    """A source state (name -> array) that hands out tensors with shape checks, remembers what
    was used, and reports missing names a few at a time. ``origin`` maps names of a renamed state
    to the file's own names (several for a fused tensor), which messages and ``unused`` report."""

    def __init__(self, path: Path, state: dict[str, Any], origin: dict[str, list[str]] | None = None):
        self.path = Path(path)
        self.state = state
        self.origin = origin or {}
        self.used: set[str] = set()

    def __contains__(self, name: str) -> bool:
        return name in self.state

    def require(self, names: Iterable[str]) -> None:
        missing = [n for n in names if n not in self.state]
        if missing:
            more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
            raise ConversionError(f"{self.path}: missing keys {', '.join(missing[:5])}{more}")

    def get(self, name: str, shape: tuple[int, ...] | None = None) -> torch.Tensor:
        self.require([name])
        value = self.state[name]
        t = (value if torch.is_tensor(value) else torch.from_numpy(np.asarray(value))).detach().to(torch.float32)
        if shape is not None and tuple(t.shape) != tuple(shape):
            raise ConversionError(f"{self.path}: {'+'.join(self.file_names(name))} has shape {list(t.shape)}, "
                                  f"expected {list(shape)}")
        self.used.add(name)
        return t

    def file_names(self, name: str) -> list[str]:
        """The file's own names for ``name`` (itself unless the state was renamed)."""
        return self.origin.get(name, [name])

    def unused(self) -> list[str]:
        return sorted(n for name in set(self.state) - self.used for n in self.file_names(name))


def block_count(params: Params, pattern: str) -> int:
    """Number of blocks: 1 + the largest index ``i`` in names matching ``pattern`` (one group)."""
    found = [int(m.group(1)) for k in params.state if (m := re.match(pattern, k))]
    if not found:
        raise ConversionError(f"{params.path}: no transformer block found (no key matches {pattern!r})")
    depth = max(found) + 1
    return depth


TORCH_BLOCK_PARAMS = ("norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.proj.weight", "attn.proj.bias",
                      "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias")


def torch_vit_layout(p: Params, num_heads: int | None,
                     hint: str = "") -> tuple[torch.Tensor, int, tuple[int, int, int], int, int, int]:
    """(tubelet weight, width, tubelet, depth, heads, MLP width) of a PyTorch video ViT with timm-style
    names (VideoMAE, V-JEPA), after checking every block parameter is present; ``hint`` ends the
    error for a tubelet that is not a video Conv3d."""
    w = p.get("patch_embed.proj.weight")
    if w.dim() != 5 or w.shape[1] != 3:
        raise ConversionError(f"{p.path}: patch_embed.proj.weight has shape {list(w.shape)}, "
                              f"expected [C, 3, t, h, w]{hint}")
    dim, patch = int(w.shape[0]), tuple(int(s) for s in w.shape[2:])
    depth = block_count(p, r"blocks\.(\d+)\.")
    heads = heads_for(p.path, dim, num_heads)
    p.require(["patch_embed.proj.bias", *(f"blocks.{i}.{n}" for i in range(depth) for n in TORCH_BLOCK_PARAMS)])
    return w, dim, patch, depth, heads, int(p.state["blocks.0.mlp.fc1.weight"].shape[0])


def block_tensors(p: Params, b: str, dim: int, mlp_dim: int) -> dict[str, torch.Tensor]:
    """frozen4d's tensors of block ``b`` (e.g. ``blocks.3.``) of a timm-style ViT (VideoMAE, V-JEPA):
    the qkv bias is ``attn.qkv.bias``, or VideoMAE's ``(q_bias, 0, v_bias)``, or zero; a layer scale
    ``gamma_1`` / ``gamma_2`` is folded into its branch's last linear layer (exact:
    gamma * (W x + b) = (gamma[:, None] * W) x + gamma * b)."""
    qkv_w = p.get(b + "attn.qkv.weight", (3 * dim, dim))
    if (b + "attn.q_bias") in p or (b + "attn.v_bias") in p:
        q_bias, v_bias = p.get(b + "attn.q_bias", (dim,)), p.get(b + "attn.v_bias", (dim,))
        qkv_b = torch.cat([q_bias, torch.zeros_like(q_bias), v_bias])
    elif (b + "attn.qkv.bias") in p:
        qkv_b = p.get(b + "attn.qkv.bias", (3 * dim,))
    else:
        qkv_b = torch.zeros(3 * dim)
    proj_w, proj_b = p.get(b + "attn.proj.weight", (dim, dim)), p.get(b + "attn.proj.bias", (dim,))
    fc2_w, fc2_b = p.get(b + "mlp.fc2.weight", (dim, mlp_dim)), p.get(b + "mlp.fc2.bias", (dim,))
    if (b + "gamma_1") in p:
        g1, g2 = p.get(b + "gamma_1", (dim,)), p.get(b + "gamma_2", (dim,))
        proj_w, proj_b = proj_w * g1[:, None], proj_b * g1
        fc2_w, fc2_b = fc2_w * g2[:, None], fc2_b * g2
    return {
        b + "norm1.weight": p.get(b + "norm1.weight", (dim,)), b + "norm1.bias": p.get(b + "norm1.bias", (dim,)),
        b + "attn.qkv.weight": qkv_w, b + "attn.qkv.bias": qkv_b,
        b + "attn.proj.weight": proj_w, b + "attn.proj.bias": proj_b,
        b + "norm2.weight": p.get(b + "norm2.weight", (dim,)), b + "norm2.bias": p.get(b + "norm2.bias", (dim,)),
        b + "mlp.fc1.weight": p.get(b + "mlp.fc1.weight", (mlp_dim, dim)),
        b + "mlp.fc1.bias": p.get(b + "mlp.fc1.bias", (mlp_dim,)),
        b + "mlp.fc2.weight": fc2_w, b + "mlp.fc2.bias": fc2_b,
    }


def heads_for(path: Path, width: int, num_heads: int | None) -> int:
    if num_heads is None:
        if width not in HEADS_BY_WIDTH:
            raise ConversionError(f"{path}: width {width} is not a standard ViT width; pass --num-heads")
        num_heads = HEADS_BY_WIDTH[width]
    if width % num_heads:
        raise ConversionError(f"{path}: width {width} is not divisible by num_heads={num_heads}")
    return num_heads


def factor_grid(path: Path, tokens: int, patch: tuple[int, int, int], img_size: int | None,
                num_frames: int) -> tuple[int, int, int]:
    """(T', h, w) of a flattened position table of ``tokens`` rows for square frames: T' from
    ``num_frames``; h = w from ``img_size``, or from tokens / T' when ``img_size`` is None."""
    grid = clip_grid(path, patch, img_size, num_frames)
    t = grid[0]
    if img_size is None:
        side = int(round((tokens / t) ** 0.5)) if tokens % t == 0 else 0
        if side * side * t != tokens or patch[1] != patch[2]:
            raise ConversionError(f"{path}: {tokens} position rows do not factor as {t}×h×h; "
                                  f"pass --num-frames/--img-size of the pretraining clip")
        return t, side, side
    if grid[0] * grid[1] * grid[2] != tokens:
        raise ConversionError(f"{path}: the position table has {tokens} rows, but a {num_frames}×{img_size}²"
                              f" clip gives {grid[0]}×{grid[1]}×{grid[2]} = {grid[0] * grid[1] * grid[2]} tokens;"
                              f" pass the pretraining --img-size/--num-frames")
    return grid


def clip_grid(path: Path, patch: tuple[int, int, int], img_size: int | None,
              num_frames: int | None) -> tuple[int | None, int | None, int | None]:
    """(T', h, w) of a ``num_frames`` × ``img_size``² clip cut into ``patch`` tubelets (None where a
    size is None); a size the tubelets do not tile is an error, never rounded down."""
    pt, ph, pw = patch
    if num_frames is not None and num_frames % pt:
        raise ConversionError(f"{path}: num_frames={num_frames} is not divisible by the tubelet length {pt}")
    if img_size is not None and (img_size % ph or img_size % pw):
        raise ConversionError(f"{path}: img_size={img_size} is not divisible by the patch {ph}×{pw}")
    return (None if num_frames is None else num_frames // pt, None if img_size is None else img_size // ph,
            None if img_size is None else img_size // pw)


def resample_table(table: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
    """A [1, T', h, w, C] position table resampled to ``grid`` exactly as ``VideoViT`` does at
    run time (trilinear, align_corners=False), so converting at a size equals running at it."""
    if tuple(table.shape[1:4]) == tuple(grid):
        return table
    out = F.interpolate(table.permute(0, 4, 1, 2, 3), size=grid, mode="trilinear", align_corners=False)
    return out.permute(0, 2, 3, 4, 1).contiguous()


def fold_input_normalization(weight: torch.Tensor, bias: torch.Tensor, mean: tuple[float, ...],
                             std: tuple[float, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Patch-embedding weights [C, 3, t, h, w] that take frozen4d's ImageNet-normalised input
    and give what the source computed on its own input normalisation ``(x01 - mean) / std``.
    The tubelet conv is linear and unpadded, so this is exact:
    x_src = a * x_in + c with a = std_in / std, c = (mean_in - mean) / std, per channel."""
    mean_in, std_in = torch.tensor(IMAGENET_MEAN, dtype=torch.float64), torch.tensor(IMAGENET_STD, dtype=torch.float64)
    a = std_in / torch.tensor(std, dtype=torch.float64)
    c = (mean_in - torch.tensor(mean, dtype=torch.float64)) / torch.tensor(std, dtype=torch.float64)
    w = weight.double()
    new_w = w * a.view(1, 3, 1, 1, 1)
    new_b = bias.double() + (w * c.view(1, 3, 1, 1, 1)).sum(dim=(1, 2, 3, 4))
    return new_w.float(), new_b.float()


def build(path: Path, cfg: ViTConfig, state: dict[str, torch.Tensor]) -> VideoViT:
    """A ``VideoViT`` of ``cfg`` holding exactly ``state`` (every tensor, right shapes), in eval mode."""
    model = VideoViT(cfg)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # a converter bug rather than a bad file, but say which file
        raise ConversionError(f"{path}: converted weights do not fit the architecture ({first_line(exc)})") from exc
    return model.eval()


def source_record(kind: str, src: Path) -> dict[str, Any]:
    """The sidecar's ``source``: kind, file name and sha256; for a directory (a Hugging Face
    ``save_pretrained`` folder) the sha256 of each config and weights file in it."""
    src = Path(src)
    if not src.is_dir():
        return {"kind": kind, "file": src.name, "sha256": sha256_file(src)}
    files = sorted(f for f in src.iterdir() if f.is_file() and (f.suffix in (".json", ".safetensors", ".bin")))
    return {"kind": kind, "file": src.name, "files": {f.name: sha256_file(f) for f in files}}


def check_output(out: Path) -> Path:
    """``out`` if it can name a converted checkpoint: a ``.safetensors`` path where neither it nor its
    ``.json`` sidecar is a directory, under folders that are folders; checked before converting."""
    out = Path(out)
    if out.suffix != ".safetensors":
        raise ConversionError(f"{out}: the output must be a .safetensors file")
    if out.is_dir():
        raise ConversionError(f"{out}: is a directory; expected the path of the .safetensors file to write")
    if sidecar_path(out).is_dir():
        raise ConversionError(f"{sidecar_path(out)}: is a directory, where the sidecar of {out} goes; "
                              f"choose another output name")
    above = next((d for d in out.parents if d.exists()), None)
    if above is not None and not above.is_dir():
        raise ConversionError(f"{out}: cannot be written: {above} is a file, not a folder")
    return out


def save_to(out: Path, save: Callable[[], str]) -> str:
    """The sha256 that ``save()`` returns; an OSError while it writes ``out`` (disk full, no write
    permission, a read-only disk) is one line naming ``out``. The write is atomic: nothing of it is
    left, and an earlier checkpoint there stays as it was."""
    try:
        return save()
    except OSError as exc:
        raise ConversionError(f"{out}: cannot write the converted checkpoint ({exc.strerror or exc}); "
                              f"any earlier checkpoint there is unchanged") from exc


def write(model: VideoViT, out: Path, kind: str, src: Path, notes: dict[str, Any]) -> str:
    """Save the converted encoder (safetensors + sidecar naming the source kind, file and sha256)."""
    out = check_output(out)
    extra = {"source": source_record(kind, src), "conversion": notes}
    return save_to(out, lambda: save_checkpoint(model, out, train_config={}, extra=extra))
