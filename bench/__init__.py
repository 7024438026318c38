"""frozen4d's evaluation harness.

``CONFIG_DIR`` is the hydra configuration tree (``bench.yaml``, ``pretrain.yaml``, groups ``data/``
and ``hydra/launcher/``): the repository's top-level ``configs/``, linked into this package as
``bench/configs`` so that it ships as package data (pyproject.toml) and a non-editable
``pip install`` composes the same configs as a checkout.
"""
from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
