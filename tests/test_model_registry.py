"""The model registry: every name resolves once, through the family that owns it, and a new family
is one class plus its registration."""
from pathlib import Path

import pytest
import torch
from torch import nn

from bench.errors import ConfigError
from bench.models import build_encoder
from bench.models.family import Model, ModelFamily
from bench.registry import MODELS, model_families, resolve_model


@pytest.mark.parametrize("name,family,fields", [
    ("blind", "blind", {}),
    ("pixels", "pixels", {}),
    ("timm/vit_small_patch14_dinov2", "timm", {"base": "vit_small_patch14_dinov2"}),
    ("layerlock_l", "zoo", {"objective": "layerlock", "size": "l"}),
    ("latent_nofreeze_t", "zoo", {"objective": "latent_nofreeze", "size": "t"}),
    ("random_t", "zoo", {"objective": "random", "size": "t"}),
    ("random_dinov2_s14_imgfocus", "twin", {"base": "dinov2_s14_imgfocus"}),
    ("mae_q", "checkpoint", {"size": None}),  # no size q: a checkpoint name like any other
    ("videomae_b", "checkpoint", {}),
])
def test_a_name_resolves_to_the_family_that_owns_it(name, family, fields):
    model = resolve_model(name)
    assert model.name == name and model.family.name == family
    assert {k: getattr(model, k) for k in fields} == fields


def test_references_untrained_rows_and_random_rows():
    table = {name: (m.reference, m.untrained, m.random_row) for name in
             ("blind", "pixels", "random_t", "supervised_s", "mae_t", "vjepa_l", "dinov2_s14_imgfocus",
              "random_dinov2_s14_imgfocus", "random_vjepa_l", "timm/vit_small_patch14_dinov2")
             if (m := resolve_model(name))}
    assert table == {
        "blind": ("blind", False, None), "pixels": ("pixels", False, None),
        "random_t": ("random", True, "random_t"), "supervised_s": ("supervised", False, "random_s"),
        "mae_t": (None, False, "random_t"), "vjepa_l": (None, False, "random_vjepa_l"),
        "dinov2_s14_imgfocus": ("external", False, "random_dinov2_s14_imgfocus"),
        "random_dinov2_s14_imgfocus": ("external", True, None), "random_vjepa_l": (None, True, None),
        "timm/vit_small_patch14_dinov2": (None, False, None)}


def test_every_hydra_node_resolves_back_to_its_family():
    for family in model_families():
        for group, name, node in family.config_nodes():
            assert group.startswith("model") and resolve_model(node["name"]).family.name == family.name, name


def test_hydra_numbers_resolve_as_names():
    assert resolve_model(1).name == "1" and resolve_model(1).family.name == "checkpoint"


def test_only_zoo_names_have_an_architecture():
    assert resolve_model("layerlock_t").architecture(img_size=32).pos_embed == "rope"
    with pytest.raises(ConfigError, match="'videomae_b' is not a zoo name"):
        resolve_model("videomae_b").architecture()


class Constant(nn.Module):
    """An encoder whose every feature is 1: the smallest family there is."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ones(x.shape[0], x.shape[2] // 2, 16, self.dim)


@pytest.fixture
def constant_family():
    class ConstantFamily(ModelFamily):
        name, order = "constant", 5

        def parse(self, name: str) -> Model | None:
            dim = name.removeprefix("constant")
            return Model(name, self, base=dim) if name.startswith("constant") and dim.isdigit() else None

        def build(self, model: Model, checkpoints: Path, seed: int, weights, overrides: dict):
            return Constant(int(model.base)), {"sha256": f"constant-{model.base}", "source": "ones"}

        def tubelet(self, model: Model, checkpoints: Path):
            return (2, 16, 16)

    MODELS.register()(ConstantFamily)
    yield ConstantFamily
    MODELS._entries.pop("constant")


def test_a_new_family_is_one_class_and_its_registration(constant_family):
    model = resolve_model("constant8")
    assert model.family.name == "constant" and model.tubelet() == (2, 16, 16) and not model.untrained
    encoder, meta = build_encoder("constant8", img_size=32)
    assert encoder(torch.zeros(1, 3, 4, 32, 32)).shape == (1, 2, 16, 8) and meta["sha256"] == "constant-8"
    assert resolve_model("constantx").family.name == "checkpoint"  # not its name: the catch-all's
    with pytest.raises(ConfigError, match="model.weights is for timm/<arch> models"):
        build_encoder("constant8", weights="w.safetensors")
