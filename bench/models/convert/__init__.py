"""Converters from public video-encoder checkpoints to frozen4d checkpoints.

``python -m bench.models.convert <kind> <in> <out.safetensors> [--img-size N --num-frames T]``

===========  ======================================================  ==========================
kind         source                                                  input
===========  ======================================================  ==========================
videomae     VideoMAE / VideoMAE-v2 (MCG-NJU, OpenGVLab), pretrain   ``.pth`` state dict
             or finetune encoders (:mod:`.videomae`)
vjepa        V-JEPA encoders (facebookresearch/jepa) (:mod:`.vjepa`) ``.pth.tar`` checkpoint
vjepa2       V-JEPA 2 encoders (facebookresearch/vjepa2), 3D RoPE    ``.pt`` checkpoint
             (:mod:`.vjepa`)
4ds          4DS release (google-deepmind/representations4d), flax   ``.npz``
             parameters (:mod:`.fourds`)
hf-videomae  transformers ``VideoMAEModel`` / ``ForPreTraining`` /   ``save_pretrained`` folder
             ``ForVideoClassification`` (:mod:`.hf_videomae`)
hf-vjepa2    transformers ``VJEPA2Model`` /                          ``save_pretrained`` folder
             ``VJEPA2ForVideoClassification`` (:mod:`.hf_vjepa2`)
onnx-dinov2  transformers ``Dinov2Model`` (alone or as a backbone)   ``.onnx`` file
             exported to ONNX; -> a timm DINOv2 image ViT
             (:mod:`.onnx_dinov2`)
===========  ======================================================  ==========================

Each video converter maps the source's parameters onto :class:`bench.models.vit.VideoViT` exactly
(same features up to float rounding; the tests check this against reference forwards written
from each source's published architecture) and writes a safetensors checkpoint whose sidecar
records the source kind, file name and sha256 (for a folder, of each config and weights file),
and what was dropped or folded. Inputs are only read with ``torch.load(weights_only=True)``,
safetensors, JSON or ``np.load(allow_pickle=False)``: a file that needs code to unpickle is
refused, never run; transformers is not needed. Errors are one line naming the file. Image
converters (``IMAGE_CONVERTERS``) write a timm state dict instead, with a ``timm/1`` sidecar: the
model then runs frame by frame (:mod:`bench.models.frames`), under its file stem like the others.

Use a converted model by its file stem: put ``<name>.safetensors`` (+ ``.json``) in the
checkpoint directory and run ``python -m bench.run model.name=<name> paths.checkpoints=DIR``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from bench.models.checkpoint import save_timm_checkpoint
from bench.models.convert import fourds, hf_videomae, hf_vjepa2, onnx_dinov2, videomae, vjepa
from bench.models.convert.common import ConversionError, check_output, save_to, source_record, write
from bench.models.vit import VideoViT

CONVERTERS: dict[str, Callable[..., tuple[VideoViT, dict[str, Any]]]] = {
    videomae.KIND: videomae.convert,
    vjepa.KIND: vjepa.convert,
    vjepa.KIND_V2: vjepa.convert_v2,
    fourds.KIND: fourds.convert,
    hf_videomae.KIND: hf_videomae.convert,
    hf_vjepa2.KIND: hf_vjepa2.convert,
}
# image backbones -> (timm architecture, state dict, its keyword overrides, notes)
IMAGE_CONVERTERS: dict[str, Callable[..., tuple[str, dict, dict[str, Any], dict[str, Any]]]] = {
    onnx_dinov2.KIND: onnx_dinov2.convert,
}
KINDS = (*CONVERTERS, *IMAGE_CONVERTERS)
SIZES = ("img_size", "num_frames", "num_heads")  # options that are a size or a count: None or >= 1


def check_options(options: dict[str, Any]) -> None:
    """Refuse a size or count option that is not None or an integer >= 1 (the CLI's flags are
    checked by argparse; this guards calls from Python, where 0 would read as 'the default')."""
    for name in SIZES:
        value = options.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ConversionError(f"{name}={value!r}: expected an integer >= 1 (or None for the default)")


def convert(kind: str, src: str | Path, out: str | Path, **options: Any) -> tuple[VideoViT | dict[str, Any], str]:
    """Convert ``src`` (a ``kind`` checkpoint) into ``out`` (.safetensors + .json sidecar);
    returns (the converted encoder, or an image backbone's timm architecture, and the sha256).
    ``options``: img_size, num_frames, num_heads, checkpoint_key (V-JEPA, V-JEPA 2)."""
    if kind not in KINDS:
        raise ConversionError(f"unknown checkpoint kind {kind!r}; known: {', '.join(KINDS)}")
    out = check_output(out)
    check_options(options)
    if kind in IMAGE_CONVERTERS:
        arch, state, overrides, notes = IMAGE_CONVERTERS[kind](Path(src), **options)
        extra = {"source": source_record(kind, Path(src)), "conversion": notes}
        sha = save_to(out, lambda: save_timm_checkpoint(state, arch, overrides, out, extra))
        return {"timm": arch, **overrides}, sha
    model, notes = CONVERTERS[kind](Path(src), **options)
    return model, write(model, out, kind, Path(src), notes)


__all__ = ["CONVERTERS", "IMAGE_CONVERTERS", "KINDS", "ConversionError", "convert"]
