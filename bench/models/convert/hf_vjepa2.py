"""Hugging Face transformers V-JEPA 2 folders -> frozen4d ``VideoViT``.

Reads the ``save_pretrained`` folder of ``VJEPA2Model`` (or ``VJEPA2ForVideoClassification``,
whose model sits under ``vjepa2.``; config.json ``model_type: vjepa2``) without transformers.
Only the encoder is kept. It is renamed to the facebookresearch/vjepa2 layout and converted by
:func:`bench.models.convert.vjepa.rope_encoder`, shared with the ``vjepa2`` kind:

=========================================================  ============================
transformers (``encoder.layer.N.``)                        vjepa2 (``blocks.N.``)
=========================================================  ============================
``encoder.embeddings.patch_embeddings.proj``               ``patch_embed.proj``
``norm1`` / ``norm2`` / ``mlp.fc1`` / ``mlp.fc2``          same names
``attention.{query,key,value}``                            ``attn.qkv`` (rows q, k, v)
``attention.proj``                                         ``attn.proj``
=========================================================  ============================

transformers' ``VJEPA2RopeAttention`` is V-JEPA 2's RoPE (see :mod:`bench.models.convert.vjepa`):
2·⌊⌊d/3⌋/2⌋ channels per axis, base 10000, the frequency vector tiled, which the converted
``ViTConfig`` records as ``rope_split`` (1/3, 1/3, 1/3), ``rope_theta`` 10000,
``rope_freqs`` "tile". One difference: transformers derives each token's (t, h, w) from its
index with the grid of the config's ``crop_size``, the original code (and frozen4d) from the
clip's own grid; they agree for frames of ``crop_size`` (any frame count), which is the size
transformers' processor produces.

``layer_norm_eps`` and ``hidden_act`` come from config.json; ``crop_size`` / ``frames_per_clip``
(or ``--img-size`` / ``--num-frames``) only set the nominal clip size (RoPE has no table).
DROPPED and listed in the sidecar: the final ``encoder.layernorm``, the ``predictor`` and, for
video classification, the ``pooler`` and ``classifier``. frozen4d feeds ImageNet-normalised
frames, as V-JEPA 2 was trained; a folder's preprocessor config is not read.
"""
from __future__ import annotations

from bench.models.convert import hf, vjepa

KIND = "hf-vjepa2"
LAYOUT = hf.Layout(
    model_type="vjepa2",
    marker="embeddings.patch_embeddings.proj.weight",
    rules=[(r"embeddings\.patch_embeddings\.proj\.", "patch_embed.proj."),
           (r"layer\.(\d+)\.attention\.", r"blocks.\1.attn."),
           (r"layer\.(\d+)\.", r"blocks.\1.")],
    # VJEPA2Config's defaults, for keys a config.json leaves out
    defaults={"crop_size": 256, "frames_per_clip": 64, "num_attention_heads": 16, "hidden_act": "gelu",
              "layer_norm_eps": 1e-6},
    clip_keys=("crop_size", "frames_per_clip"),
    encoder=vjepa.rope_encoder)

convert = LAYOUT.convert  # (src, img_size=None, num_frames=None, num_heads=None) -> (encoder, notes)
