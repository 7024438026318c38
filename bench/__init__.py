"""frozen4d's evaluation harness.

``CONFIG_DIR`` is the hydra configuration tree (``bench.yaml``, ``pretrain.yaml``, groups ``data/``,
``readout/``, ``hydra/launcher/``). It lives inside this package and ships with it as package data
(pyproject.toml), so a non-editable ``pip install`` composes the same configs as a checkout.
"""
from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
