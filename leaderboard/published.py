"""Evaluation results published by model owners, shown beside ours on the leaderboard page.

Each entry is one number as its owners report it in a file of their repository (``source``, read at
the commit in ``COMMITS``), with the protocol read from the same repository (``config``: the evaluation
config the source links, else the source itself). None of them is measured here: the page shows them
in a section of their own, after our tables, and they never enter a rank, a bold or a mark. The
trackers of ``google-deepmind/tapnet`` are supervised models, not frozen encoders under a probe:
they stand as ceilings (``supervised=True``). An entry is read from its source file, never written
from memory.
"""
from __future__ import annotations

from dataclasses import dataclass

JEPA, VJEPA2, TAPNET = "facebookresearch/jepa", "facebookresearch/vjepa2", "google-deepmind/tapnet"
COMMITS = {JEPA: "51c59d518fc63c08464af6de585f78ac0c7ed4d5",  # the snapshot each repository was read at
           VJEPA2: "c2963a47433ecca0ad4f06ec28bcfa8cb5b5cefb",
           TAPNET: "c2cbab81cc06092b5f05bfe2da7bfec54e2079c9"}
FRAMES = "frames × clips × views"


@dataclass(frozen=True)
class Published:
    """One published number: what was evaluated, on what, under which protocol, and where it is written."""

    model: str              # the owners' name of the evaluated model
    architecture: str       # backbone (and parameter count where the source states one)
    dataset: str
    metric: str
    value: float            # as the source writes it
    probe: str              # the readout trained on the frozen encoder; for a supervised model, how it is run
    clips: str              # frames × clips × views of one test video, or what stands for them
    resolution: str         # test-time input resolution
    repo: str               # owner/name of the repository the number is read from
    file: str               # the file of ``repo`` that states the number
    config: str = ""        # the file of ``repo`` the protocol is read from, where it is not ``file``
    supervised: bool = False  # a supervised model: a ceiling for frozen readouts, not a frozen-probe result

    @property
    def source(self) -> str:
        """``owner/name file``, e.g. ``facebookresearch/jepa README.md``."""
        return f"{self.repo} {self.file}"

    @property
    def commit(self) -> str:
        return COMMITS[self.repo]

    @property
    def protocol(self) -> str:
        """Probe; frames × clips × views (or what stands for them); resolution."""
        return f"{self.probe}; {self.clips}; {self.resolution}"


def jepa(model: str, pretrained: int, dataset: str, value: float, clips: str, config: str) -> Published:
    """A V-JEPA result (``facebookresearch/jepa`` README, "Attentive probes" tables; its evaluation code trains
    a one-block attentive probe); backbone and pretraining from the README's "Pretrained models" table."""
    arch = f"{model.split()[1]}, 2×16×16 tubelets, pretrained at {pretrained}×{pretrained} on VideoMix2M"
    return Published(model, arch, dataset, "accuracy (%)", value, "1-block attentive probe", clips,
                     f"{pretrained}×{pretrained}", JEPA, "README.md", f"configs/evals/{config}.yaml")


def vjepa2(model: str, dataset: str, metric: str, value: float, probe: str, clips: str, config: str) -> Published:
    """A V-JEPA 2 result (``facebookresearch/vjepa2`` README, "Evaluation Attentive Probes"; parameters from
    its "Pretrained Checkpoints" table); the protocol from the inference config the README links."""
    arch, res = {"V-JEPA 2 ViT-L/16": ("ViT-L/16, 300M", 256), "V-JEPA 2 ViT-g/16 (384)": ("ViT-g/16, 1B", 384)}[model]
    return Published(model, arch, dataset, metric, value, probe, clips, f"{res}×{res}", VJEPA2, "README.md",
                     f"configs/inference/{config}.yaml")


def tracker(model: str, backbone: str, value: float) -> Published:
    """A supervised tracker's TAP-Vid-DAVIS result (``google-deepmind/tapnet`` README, checkpoints table,
    "DAVIS First (AJ)", reported at 256×256 inference resolution); query mode ``first`` as the TAP-Vid
    README defines it."""
    return Published(model, backbone, "TAP-Vid-DAVIS", "average Jaccard AJ (%)", value,
                     "supervised tracker, no frozen readout",
                     "query first: each point queried once, at its first visible frame", "256×256", TAPNET,
                     "README.md", "tapnet/tapvid/README.md", supervised=True)


IMAGE = "one image repeated as a 16-frame clip"
PROBE4 = "4-block attentive probe"
ANTICIPATION = "32 frames at 8 fps, anticipation time 1 s"
PUBLISHED: tuple[Published, ...] = (
    jepa("V-JEPA ViT-L/16", 224, "Kinetics-400", 80.8, f"16×8×3 ({FRAMES})", "vitl16_k400_16x8x3"),
    jepa("V-JEPA ViT-H/16", 224, "Kinetics-400", 82.0, f"16×8×3 ({FRAMES})", "vith16_k400_16x8x3"),
    jepa("V-JEPA ViT-H/16 (384)", 384, "Kinetics-400", 81.9, f"16×8×3 ({FRAMES})", "vith16_384_k400_16x8x3"),
    jepa("V-JEPA ViT-L/16", 224, "Something-Something v2", 69.5, f"16×2×3 ({FRAMES})", "vitl16_ssv2_16x2x3"),
    jepa("V-JEPA ViT-H/16", 224, "Something-Something v2", 71.4, f"16×2×3 ({FRAMES})", "vith16_ssv2_16x2x3"),
    jepa("V-JEPA ViT-H/16 (384)", 384, "Something-Something v2", 72.2, f"16×2×3 ({FRAMES})",
         "vith16_384_ssv2_16x2x3"),
    jepa("V-JEPA ViT-L/16", 224, "ImageNet-1K", 74.8, IMAGE, "vitl16_in1k"),
    jepa("V-JEPA ViT-H/16", 224, "ImageNet-1K", 75.9, IMAGE, "vith16_in1k"),
    jepa("V-JEPA ViT-H/16 (384)", 384, "ImageNet-1K", 77.4, IMAGE, "vith16_384_in1k"),
    jepa("V-JEPA ViT-L/16", 224, "Places205", 60.3, IMAGE, "vitl16_places"),
    jepa("V-JEPA ViT-H/16", 224, "Places205", 61.7, IMAGE, "vith16_places"),
    jepa("V-JEPA ViT-H/16 (384)", 384, "Places205", 62.8, IMAGE, "vith16_384_places"),
    jepa("V-JEPA ViT-L/16", 224, "iNaturalist 2021", 67.8, IMAGE, "vitl16_inat"),
    jepa("V-JEPA ViT-H/16", 224, "iNaturalist 2021", 67.9, IMAGE, "vith16_inat"),
    jepa("V-JEPA ViT-H/16 (384)", 384, "iNaturalist 2021", 72.6, IMAGE, "vith16_384_inat"),
    vjepa2("V-JEPA 2 ViT-L/16", "Something-Something v2", "accuracy (%)", 73.7, PROBE4, f"16×2×3 ({FRAMES})",
           "vitl/ssv2"),
    vjepa2("V-JEPA 2 ViT-g/16 (384)", "Something-Something v2", "accuracy (%)", 77.3, PROBE4, f"64×2×3 ({FRAMES})",
           "vitg-384/ssv2"),
    vjepa2("V-JEPA 2 ViT-L/16", "Diving48", "accuracy (%)", 89.0, f"{PROBE4} on 4 encoder layers",
           f"32×4×3 ({FRAMES})", "vitl/diving48"),
    vjepa2("V-JEPA 2 ViT-g/16 (384)", "Diving48", "accuracy (%)", 90.2, f"{PROBE4} on 4 encoder layers",
           f"32×4×3 ({FRAMES})", "vitg-384/diving48"),
    vjepa2("V-JEPA 2 ViT-L/16", "EPIC-KITCHENS-100", "action anticipation recall@5 (%)", 32.7,
           f"{PROBE4} on encoder and predictor features", ANTICIPATION, "vitl/ek100"),
    vjepa2("V-JEPA 2 ViT-g/16 (384)", "EPIC-KITCHENS-100", "action anticipation recall@5 (%)", 39.7,
           f"{PROBE4} on encoder and predictor features", ANTICIPATION, "vitg-384/ek100"),
    tracker("TAP-Net", "TSM-ResNet18", 33.0),
    tracker("TAPIR", "ResNet18", 58.5),
    tracker("BootsTAPIR", "ResNet18 + 4 Convs", 62.4),
    tracker("TAPNext", "TrecViT-B", 65.25),
)
