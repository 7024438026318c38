"""Hugging Face transformers VideoMAE folders -> frozen4d ``VideoViT``.

Reads the ``save_pretrained`` folder of ``VideoMAEModel``, ``VideoMAEForPreTraining`` or
``VideoMAEForVideoClassification`` (config.json ``model_type: videomae``) without transformers.
The encoder (under ``videomae.`` in the last two) is renamed to the MCG-NJU layout and converted
by :func:`bench.models.convert.videomae.encoder_from`, so the conversion is the same:

=========================================================  ============================
transformers (``encoder.layer.N.``)                        MCG-NJU (``blocks.N.``)
=========================================================  ============================
``embeddings.patch_embeddings.projection``                 ``patch_embed.proj``
``layernorm_before`` / ``layernorm_after``                 ``norm1`` / ``norm2``
``attention.attention.{query,key,value}.weight``           ``attn.qkv.weight`` (rows q, k, v)
``attention.attention.q_bias`` / ``v_bias``                ``attn.q_bias`` / ``attn.v_bias``
``attention.output.dense``                                 ``attn.proj``
``intermediate.dense`` / ``output.dense``                  ``mlp.fc1`` / ``mlp.fc2``
=========================================================  ============================

- the key bias is zero (transformers, like VideoMAE, adds ``(q_bias, 0, v_bias)``; none at all
  with ``qkv_bias: false``);
- the fixed sinusoid table is not in the file (transformers builds it at load time for
  ``image_size`` × ``num_frames``); it is regenerated for ``--img-size`` / ``--num-frames``,
  default the config's, as transformers would build it for a config of that size;
- ``layer_norm_eps`` comes from config.json (transformers' VideoMAE default is 1e-12, the
  original release's 1e-6) and ``hidden_act`` gives the MLP activation;
- DROPPED and listed in the sidecar: the final ``layernorm`` (``use_mean_pooling: false``),
  ``fc_norm`` and ``classifier`` (video classification), ``encoder_to_decoder``, ``mask_token``
  and the ``decoder`` (pretraining) — see :mod:`bench.models.convert.videomae` for why a final
  LayerNorm is dropped, not folded.

frozen4d feeds ImageNet-normalised frames, the normalisation VideoMAE was trained with; a
folder's preprocessor config is not read.
"""
from __future__ import annotations

from bench.models.convert import hf, videomae

KIND = "hf-videomae"
LAYER = r"encoder\.layer\.(\d+)\."
LAYOUT = hf.Layout(
    model_type="videomae",
    marker="embeddings.patch_embeddings.projection.weight",
    rules=[(r"embeddings\.patch_embeddings\.projection\.", "patch_embed.proj."),
           (LAYER + r"attention\.attention\.", r"blocks.\1.attn."),
           (LAYER + r"attention\.output\.dense\.", r"blocks.\1.attn.proj."),
           (LAYER + r"layernorm_before\.", r"blocks.\1.norm1."),
           (LAYER + r"layernorm_after\.", r"blocks.\1.norm2."),
           (LAYER + r"intermediate\.dense\.", r"blocks.\1.mlp.fc1."),
           (LAYER + r"output\.dense\.", r"blocks.\1.mlp.fc2.")],
    # VideoMAEConfig's defaults, for keys a config.json leaves out
    defaults={"image_size": 224, "num_frames": 16, "num_attention_heads": 12, "hidden_act": "gelu",
              "layer_norm_eps": 1e-12},
    clip_keys=("image_size", "num_frames"),
    encoder=videomae.encoder_from)

convert = LAYOUT.convert  # (src, img_size=None, num_frames=None, num_heads=None) -> (encoder, notes)
