"""The synthetic 4D world (docs/design.md §3): procedural scenes, their ground truth, and the dataset.

A clip is a pure function of (seed, split, index). Its action label is one of six motions, each in
two time-reversed directions (object left/right, toward/away, up/down; camera pan left/right,
dolly in/out, orbit left/right). The scene at the middle frame is drawn before the label and every
motion is centred on the middle frame, so one frame cannot tell the classes apart.
World frame: metres, z up, floor at z = 0. Pixel centres sit at integer + 0.5.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from functools import cached_property, partial
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from pycocotools import mask as mask_utils

from bench.data import raycast as rc
from bench.data.world_cache import MANIFEST, default_workers, load_or_build, open_cache
from bench.errors import ConfigError
from bench.registry import DATASETS
from bench.staging import first_open

GENERATOR_VERSION = "frozen4d-world-2"
SPLITS = {"train": 0, "test": 1}
_CLIP_STREAM, _LABEL_STREAM = 0, 1

# label -> (motion, direction); a motion moves by direction * amplitude * (ease(u) - 1/2), u in [0, 1]
MOTIONS = {
    "object_left": ("lateral", -1), "object_right": ("lateral", 1),
    "object_toward": ("depth", -1), "object_away": ("depth", 1),
    "object_up": ("vertical", 1), "object_down": ("vertical", -1),
    "camera_pan_left": ("pan", 1), "camera_pan_right": ("pan", -1),
    "camera_dolly_in": ("dolly", 1), "camera_dolly_out": ("dolly", -1),
    "camera_orbit_left": ("orbit", -1), "camera_orbit_right": ("orbit", 1),
}
LABEL_NAMES: list[str] = list(MOTIONS)
_OBJECT_MOTIONS = ("lateral", "depth", "vertical")
_AMPLITUDES = {  # end-to-end travel of each motion: metres, or radians for pan and orbit
    "lateral": (1.0, 1.6), "depth": (1.2, 1.8), "vertical": (0.6, 1.0), "dolly": (1.0, 1.5),
    "pan": (math.radians(25), math.radians(40)), "orbit": (math.radians(35), math.radians(60)),
}
# Camera and room ranges, wide enough that where a pixel lies in the image says little about its
# depth: a per-pixel depth prior learned from the train split must not solve the depth task.
_ROOM_HALF, _ROOM_HEIGHT = (3.5, 7.0), (2.6, 3.4)  # metres
_CAM_HEIGHT, _CAM_DISTANCE = (0.4, 2.3), (2.0, 4.2)  # metres above the floor / from the target
_AIM, _ROLL, _FOV = math.radians(20), math.radians(20), (45.0, 70.0)  # pitch offset and roll (±, radians); fov (deg)
_DRIFT = np.array([0.15, 0.15, 0.1] + [math.radians(a) for a in (2.0, 1.5, 1.5)])  # handheld x, y, z, yaw, pitch, roll
_CHECK_STEPS = 33  # times at which scene validity is checked (independent of num_frames)
_NEAR = 0.3  # metres between the camera and any body's bounding sphere
ARRAY_KEYS = ("video", "depth", "intrinsics", "cam_to_world", "query_points", "target_points", "occluded",
              "track_object", "boxes", "box_valid", "segmentation", "label")


@dataclass(frozen=True)
class WorldConfig:
    """Sizes and knobs of the synthetic world; every field but ``workers`` is part of the cache key."""

    num_frames: int = 16
    resolution: int = 64
    num_points: int = 64
    max_objects: int = 4
    seed: int = 0
    train_size: int = 512  # clips in split "train"
    test_size: int = 128  # clips in split "test"
    later_queries: float = 0.3  # fraction of tracks sampled after frame 0
    object_points: float = 0.5  # fraction of tracks sampled on objects (when one is visible)
    shadows: bool = True
    workers: int = 0  # cache generation processes; 0: $FROZEN4D_WORLD_WORKERS or min(2, CPUs)

    def size(self, split: str) -> int:
        """Number of clips in a split."""
        split_id(split)
        return self.train_size if split == "train" else self.test_size


def split_id(split: str) -> int:
    """Integer id of a split (part of every clip's seed)."""
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; the synthetic world has {list(SPLITS)}")
    return SPLITS[split]


SIZE_KEYS = ("train_size", "test_size", "workers")  # WorldConfig fields that leave every clip's bytes unchanged


def fingerprint(cfg: WorldConfig, split: str) -> str:
    """sha256 of everything that determines the split's bytes: the cache key."""
    config = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in SIZE_KEYS}
    payload = {"version": GENERATOR_VERSION, "split": split, "clips": cfg.size(split), "config": config}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def clip_label(cfg: WorldConfig, split: str, index: int) -> int:
    """Action class of a clip: every block of len(LABEL_NAMES) consecutive clips holds each class once."""
    n = len(LABEL_NAMES)
    order = np.random.default_rng([_LABEL_STREAM, cfg.seed, split_id(split), index // n]).permutation(n)
    return int(order[index % n])


# ---------------------------------------------------------------- small geometry (scalar math only)

def _cos_sin(angles: Any) -> tuple[np.ndarray, np.ndarray]:
    """Cosine and sine [T] through libm (numpy's vectorised versions may differ between CPUs)."""
    angles = np.atleast_1d(angles)
    return np.array([math.cos(a) for a in angles]), np.array([math.sin(a) for a in angles])


def _axis_angle(axis: np.ndarray, angles: Any) -> np.ndarray:
    """Rotations [T, 3, 3] about a unit axis by each angle (Rodrigues)."""
    (x, y, z), (c, s) = axis, _cos_sin(angles)
    v = 1 - c
    rows = [[c + x * x * v, x * y * v - z * s, x * z * v + y * s],
            [y * x * v + z * s, c + y * y * v, y * z * v - x * s],
            [z * x * v - y * s, z * y * v + x * s, c + z * z * v]]
    return np.stack([np.stack(r, -1) for r in rows], -2)


def _look(yaw: Any, pitch: Any, roll: Any) -> np.ndarray:
    """Camera-to-world rotations [T, 3, 3], columns (right, down, forward), for a z-up world."""
    (cy, sy), (cp, sp), (cr, sr) = _cos_sin(yaw), _cos_sin(pitch), _cos_sin(roll)
    forward = np.stack([cp * cy, cp * sy, sp], -1)
    right, down = np.stack([sy, -cy, 0 * sy], -1), np.stack([sp * cy, sp * sy, -cp], -1)
    return np.stack([cr[:, None] * right + sr[:, None] * down, cr[:, None] * down - sr[:, None] * right, forward], -1)


def _ease(u: np.ndarray) -> np.ndarray:
    """Smoothstep centred on the middle frame: -1/2 -> 1/2, odd about u = 1/2."""
    return u * u * (3 - 2 * u) - 0.5


def _unit(rng: np.random.Generator) -> np.ndarray:
    z, a = rng.uniform(-1, 1), rng.uniform(0, 2 * math.pi)
    r = math.sqrt(1 - z * z)
    return np.array([r * math.cos(a), r * math.sin(a), z])


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    i, f = int(h * 6) % 6, h * 6 - math.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i])


# ---------------------------------------------------------------- scene layout (the middle frame + motion sizes)

@dataclass
class _BodyPlan:
    shape: str
    size: tuple[float, ...]
    rot0: np.ndarray  # [3, 3] orientation at the middle frame
    center: np.ndarray  # (3,) centre at the middle frame, before hops
    spin_axis: np.ndarray
    spin: float  # radians turned over the clip
    hop: tuple[float, float, float]  # bounce (height, bounces per clip, phase); height 0: none
    material: rc.Material

    @property
    def radius(self) -> float:
        return rc.bounding_radius(self.shape, self.size)


@dataclass
class _Layout:
    room: np.ndarray
    floor: rc.Material
    wall: rc.Material
    ceiling: rc.Material
    light: np.ndarray
    ambient: float
    target: np.ndarray  # what the camera looks at in the middle frame
    cam_pos: np.ndarray
    yaw: float
    pitch: float
    roll: float
    fov: float  # horizontal, radians
    drift: np.ndarray  # [2, 6] handheld drift coefficients (see _camera_path)
    amplitude: dict[str, float]
    bodies: list[_BodyPlan]  # bodies[0] is the one the object labels describe


def _muted(rng: np.random.Generator) -> np.ndarray:
    h, s, v = rng.uniform(), rng.uniform(0, 0.3), rng.uniform(0.45, 0.85)
    return np.stack([_hsv(h, s, v), _hsv((h + rng.uniform(-0.1, 0.1)) % 1, s, v * rng.uniform(0.55, 0.8))])


def _vivid(rng: np.random.Generator) -> np.ndarray:
    h = rng.uniform()
    return np.stack([_hsv(h, rng.uniform(0.55, 1), rng.uniform(0.8, 1)),
                     _hsv((h + rng.uniform(0.3, 0.7)) % 1, rng.uniform(0.4, 1), rng.uniform(0.35, 0.7))])


def _material(rng: np.random.Generator, patterns: tuple[str, ...], colors: np.ndarray, scale: tuple[float, float],
              axis: np.ndarray) -> rc.Material:
    return rc.Material(patterns[rng.integers(len(patterns))], colors, rng.uniform(*scale), rng.uniform(0.1, 0.9),
                       tuple(axis), int(rng.integers(1 << 30)))


def _place(rng: np.random.Generator, target: np.ndarray, radius: float, others: list[_BodyPlan],
           tries: int = 20) -> np.ndarray | None:
    """A floor position within 1.3 m of the target, clear of the other bodies in plan view."""
    for _ in range(tries):
        r, a = 1.3 * math.sqrt(rng.uniform()), rng.uniform(0, 2 * math.pi)
        xy = target[:2] + (r * math.cos(a), r * math.sin(a))
        if all(math.dist(xy, b.center[:2]) >= radius + b.radius + 0.1 for b in others):
            return xy
    return None


def _draw_body(rng: np.random.Generator, main: bool, vertical: float, others: list[_BodyPlan],
               target: np.ndarray) -> _BodyPlan | None:
    """One body around the target, clear of the others in plan view; None when it does not fit."""
    shape = rc.SHAPES[rng.integers(len(rc.SHAPES))]
    size = {"sphere": lambda: (rng.uniform(0.25, 0.45),), "box": lambda: tuple(rng.uniform(0.18, 0.38, 3)),
            "cylinder": lambda: (rng.uniform(0.18, 0.35), rng.uniform(0.2, 0.45))}[shape]()
    radius = rc.bounding_radius(shape, size)
    xy = _place(rng, target, radius, others)
    if xy is None:
        return None
    hover = main or rng.uniform() < 0.4
    if hover or shape == "sphere":
        spin_axis, rot0 = _unit(rng), _axis_angle(_unit(rng), rng.uniform(0, 2 * math.pi))[0]
    else:
        spin_axis = np.array([0.0, 0.0, 1.0])
        rot0 = _axis_angle(spin_axis, rng.uniform(0, 2 * math.pi))[0]
    z = radius + vertical / 2 * main + rng.uniform(0.05, 0.6) if hover else size[-1]  # resting: half height
    hop = (rng.uniform(0.15, 0.35), float(rng.choice([1.0, 1.5, 2.0])), rng.uniform(0, math.pi)) \
        if not main and rng.uniform() < 0.3 else (0.0, 0.0, 0.0)
    material = _material(rng, ("checker", "stripes", "noise"), _vivid(rng), (3.0, 6.0), _unit(rng))
    return _BodyPlan(shape, size, rot0, np.array([*xy, z]), spin_axis, rng.uniform(-3, 3), hop, material)


def _draw_layout(rng: np.random.Generator, num_objects: int) -> _Layout | None:
    """One candidate middle-frame layout (None when the bodies do not fit); see _fits."""
    half, height = rng.uniform(*_ROOM_HALF, 2), rng.uniform(*_ROOM_HEIGHT)
    room = np.array([[-half[0], -half[1], 0.0], [half[0], half[1], height]])
    target = np.array([rng.uniform(-1, 1), rng.uniform(-1, 1), rng.uniform(0.3, 0.7)])
    dist, azimuth = rng.uniform(*_CAM_DISTANCE), rng.uniform(0, 2 * math.pi)
    cam = np.array([target[0] + dist * math.cos(azimuth), target[1] + dist * math.sin(azimuth),
                    rng.uniform(*_CAM_HEIGHT)])
    aim, roll = rng.uniform(-1, 1, 2) * (_AIM, _ROLL)
    amplitude = {k: rng.uniform(*r) for k, r in _AMPLITUDES.items()}
    drift = rng.uniform(-1, 1, (2, 6)) * _DRIFT
    wall_angle = rng.uniform(0.2, 1.3)  # stripes across both wall orientations
    wall_axis = np.array([math.cos(wall_angle), math.sin(wall_angle), 0.0])
    floor = _material(rng, ("checker",), _muted(rng), (1.0, 2.5), np.zeros(3))
    wall = _material(rng, ("stripes", "noise", "checker"), _muted(rng), (1.5, 3.0), wall_axis)
    ceiling = rc.Material("plain", np.stack([_hsv(0, 0, rng.uniform(0.8, 0.95))] * 2))
    toward, across = (cam[:2] - target[:2]) / dist, rng.uniform(-1.5, 1.5)  # light on the camera's side
    light = np.array([*(target[:2] + rng.uniform(0.5, 2.0) * toward + across * np.array([-toward[1], toward[0]])),
                      height - 0.3])
    bodies: list[_BodyPlan] = []
    for j in range(num_objects):
        body = _draw_body(rng, j == 0, amplitude["vertical"], bodies, target)
        if body is None:
            return None
        bodies.append(body)
    return _Layout(room, floor, wall, ceiling, light, rng.uniform(0.3, 0.45), target, cam,
                   math.atan2(target[1] - cam[1], target[0] - cam[0]), math.atan2(target[2] - cam[2], dist) + aim,
                   roll, math.radians(rng.uniform(*_FOV)), drift, amplitude, bodies)


# ---------------------------------------------------------------- motion

def _camera_path(lay: _Layout, motion: str, sign: int, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Camera rotations [T, 3, 3] and positions [T, 3]: the labelled camera motion plus a handheld
    drift of x, y, z, yaw, pitch and roll, linear and quadratic in (u - 1/2)."""
    c = u - 0.5
    drift = np.outer(c, lay.drift[0]) + np.outer(c * c - 1 / 12, lay.drift[1])
    pos, yaw = lay.cam_pos + drift[:, :3], lay.yaw + drift[:, 3]
    a = sign * lay.amplitude.get(motion, 0.0) * _ease(u)
    if motion == "pan":
        yaw = yaw + a
    elif motion == "dolly":
        pos = pos + np.outer(a, _look(lay.yaw, lay.pitch, 0.0)[0, :, 2])
    elif motion == "orbit":  # turn about the target's vertical axis, still facing it
        cos, sin = _cos_sin(a)
        rel = pos - lay.target
        pos = lay.target + np.stack([cos * rel[:, 0] - sin * rel[:, 1], sin * rel[:, 0] + cos * rel[:, 1], rel[:, 2]], -1)
        yaw = yaw + a
    return _look(yaw, lay.pitch + drift[:, 4], lay.roll + drift[:, 5]), pos


def _object_direction(lay: _Layout, motion: str) -> np.ndarray:
    """World direction of an object motion, relative to the middle-frame camera."""
    cy, sy = math.cos(lay.yaw), math.sin(lay.yaw)
    return {"lateral": np.array([sy, -cy, 0.0]), "depth": np.array([cy, sy, 0.0]),
            "vertical": np.array([0.0, 0.0, 1.0])}[motion]


def _body_centers(lay: _Layout, j: int, motion: str, sign: int, u: np.ndarray) -> np.ndarray:
    """Centres [T, 3] of body j: its bounce and, for body 0, the labelled object motion."""
    b = lay.bodies[j]
    height, bounces, phase = b.hop
    pos = np.tile(b.center, (len(u), 1))
    pos[:, 2] += height * np.abs(_cos_sin(math.pi * bounces * u + phase)[1])
    if j == 0 and motion in _OBJECT_MOTIONS:
        pos += np.outer(sign * lay.amplitude[motion] * _ease(u), _object_direction(lay, motion))
    return pos


def _body_rotations(b: _BodyPlan, u: np.ndarray) -> np.ndarray:
    """Body-to-world rotations [T, 3, 3]: a steady spin through the middle-frame orientation."""
    return rc.matmul3(_axis_angle(b.spin_axis, b.spin * (u - 0.5)), b.rot0[None])


def _view(rot: np.ndarray, pos: np.ndarray, fov: float, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Points p [T, 3] seen from cameras (rot, pos) [T]: image coords in [0, 1] and z-depth."""
    c = rc.rotate(rot, (p - pos).T, inverse=True)
    t = math.tan(fov / 2)
    return 0.5 + 0.5 * c[0] / (c[2] * t), 0.5 + 0.5 * c[1] / (c[2] * t), c[2]


def _fits(lay: _Layout) -> bool:
    """Whether the layout is valid under every label's motion: every body on screen in the middle
    frame, camera inside the room, bodies in front of it, inside the room and apart, and body 0 on
    screen throughout whenever it is the one moving."""
    u = np.linspace(0, 1, _CHECK_STEPS)
    still_cam = _camera_path(lay, "still", 0, u)
    still = [_body_centers(lay, j, "still", 0, u) for j in range(len(lay.bodies))]
    m = _CHECK_STEPS // 2
    if not all(_inside(x[m], y[m], 0.1) for x, y, _ in (_view(*still_cam, lay.fov, c) for c in still)):
        return False
    cases = [(_camera_path(lay, m, s, u), still, False) for m, s in MOTIONS.values() if m not in _OBJECT_MOTIONS]
    cases += [(still_cam, [_body_centers(lay, 0, m, s, u)] + still[1:], True)
              for m, s in MOTIONS.values() if m in _OBJECT_MOTIONS]
    return all(_case_fits(lay, cam, centers, moving) for cam, centers, moving in cases)


def _case_fits(lay: _Layout, cam: tuple[np.ndarray, np.ndarray], centers: list[np.ndarray], moving: bool) -> bool:
    """The checks of _fits for one camera path and one set of body centre paths."""
    lo, hi = lay.room
    if (cam[1] < lo + 0.25).any() or (cam[1] > hi - 0.25).any() or (centers[0][:, 2] < lay.bodies[0].radius).any():
        return False
    for j, (b, c) in enumerate(zip(lay.bodies, centers)):
        x, y, z = _view(*cam, lay.fov, c)
        if (z - b.radius < _NEAR).any() or (c[:, :2] - b.radius < lo[:2]).any() or (c + b.radius > hi).any():
            return False
        if j == 0 and moving and not _inside(x, y, 0.05):
            return False
        if j > 0 and (np.linalg.norm(centers[0] - c, axis=1) < lay.bodies[0].radius + b.radius + 0.05).any():
            return False
    return True


def _inside(x: np.ndarray, y: np.ndarray, margin: float) -> bool:
    return bool(((x > margin) & (x < 1 - margin) & (y > margin) & (y < 1 - margin)).all())


def _sample_layout(rng: np.random.Generator, max_objects: int, tries: int = 2000) -> _Layout:
    """A layout of 1..max_objects bodies (uniform) valid under every label (rejection sampling, so
    the label cannot bias it)."""
    num_objects = int(rng.integers(1, max_objects + 1))
    for _ in range(tries):
        lay = _draw_layout(rng, num_objects)
        if lay is not None and _fits(lay):
            return lay
    raise RuntimeError(f"no valid scene layout in {tries} draws")


def frame_times(num_frames: int) -> np.ndarray:
    """Clip time u in [0, 1] of each frame, with frame T // 2 at exactly u = 1/2 (the label-free
    middle frame) for even T too: u = 1/2 + (t - T // 2) / (2 (T // 2))."""
    half = max(num_frames // 2, 1)
    return 0.5 + (np.arange(num_frames) - num_frames // 2) / (2 * half)


def _scene(lay: _Layout, label: int, num_frames: int, resolution: int) -> rc.Scene:
    """The renderable scene of a layout under a label."""
    motion, sign = MOTIONS[LABEL_NAMES[label]]
    u = frame_times(num_frames)
    bodies = [rc.Body(b.shape, b.size, _body_rotations(b, u), _body_centers(lay, j, motion, sign, u), b.material)
              for j, b in enumerate(lay.bodies)]
    f = resolution / 2 / math.tan(lay.fov / 2)
    k = np.array([[f, 0, resolution / 2], [0, f, resolution / 2], [0, 0, 1]])
    return rc.Scene(lay.room, lay.floor, lay.wall, lay.ceiling, bodies, *_camera_path(lay, motion, sign, u), k,
                    lay.light, lay.ambient)


# ---------------------------------------------------------------- ground truth

def _query_pixels(rng: np.random.Generator, seg: np.ndarray, cfg: WorldConfig) -> tuple[np.ndarray, np.ndarray]:
    """Query frame and flat pixel index of each track: mostly frame 0, on objects or background."""
    n, frames = cfg.num_points, len(seg)
    later = (rng.uniform(size=n) < cfg.later_queries) & (frames > 1)
    t = np.where(later, rng.integers(1, max(frames, 2), n), 0)
    on_object, pick = rng.uniform(size=n) < cfg.object_points, rng.uniform(size=n)
    flat = seg.reshape(frames, -1)
    pixels = np.empty(n, np.int64)
    for i in range(n):
        pool = np.flatnonzero((flat[t[i]] > 0) == on_object[i])
        pool = pool if len(pool) else np.arange(flat.shape[1])
        pixels[i] = pool[int(pick[i] * len(pool))]
    return t, pixels


def _tracks(rng: np.random.Generator, scene: rc.Scene, seg: np.ndarray, cfg: WorldConfig) -> dict[str, np.ndarray]:
    """Surface points sampled where visible, carried by their body and projected into every frame;
    occluded when off screen or when the ray through the projection first hits something else."""
    frames_total, res = len(seg), cfg.resolution
    tq, pixels = _query_pixels(rng, seg, cfg)
    qy, qx = (v + 0.5 for v in np.divmod(pixels, res))
    _, obj, local = rc.cast(scene, tq, *rc.camera_rays(scene, tq, qx, qy))
    n = len(tq)
    frames = np.tile(np.arange(frames_total), n)
    world = np.repeat(local, frames_total, axis=1)
    owner = np.repeat(obj, frames_total)
    for k, body in enumerate(scene.bodies, 1):
        sel = owner == k
        world[:, sel] = rc.rotate(body.rot, world[:, sel], frames[sel]) + body.pos.T[:, frames[sel]]
    x, y, z = rc.project(scene, frames, world)
    visible = (z > 1e-6) & (x >= 0) & (x < res) & (y >= 0) & (y < res)
    s, hit, _ = rc.cast(scene, frames[visible], *rc.camera_rays(scene, frames[visible], x[visible], y[visible]))
    visible[visible] = (hit == owner[visible]) & (np.abs(s - z[visible]) <= 1e-4 * z[visible])
    points = np.clip(np.stack([x, y], -1), -res, 2 * res).reshape(n, frames_total, 2)  # finite behind the camera
    occluded = ~visible.reshape(n, frames_total)
    points[np.arange(n), tq] = np.stack([qx, qy], -1)
    occluded[np.arange(n), tq] = False
    return {"query_points": np.stack([tq, qy, qx], -1).astype(np.float32), "target_points": points.astype(np.float32),
            "occluded": occluded, "track_object": obj.astype(np.int32)}


def boxes_from_segmentation(seg: np.ndarray, max_objects: int) -> tuple[np.ndarray, np.ndarray]:
    """Tight pixel boxes (x0, y0, x1, y1) [M, T, 4] of each object id 1..M and whether it is visible [M, T]."""
    frames, h, w = seg.shape
    boxes, valid = np.zeros((max_objects, frames, 4), np.float32), np.zeros((max_objects, frames), bool)
    for m in range(max_objects):
        mask = seg == m + 1
        rows, cols = mask.any(2), mask.any(1)
        valid[m] = rows.any(1)
        edges = [cols.argmax(1), rows.argmax(1), w - cols[:, ::-1].argmax(1), h - rows[:, ::-1].argmax(1)]
        boxes[m] = np.where(valid[m][:, None], np.stack(edges, -1), 0)
    return boxes, valid


def segmentation_to_rle(seg: np.ndarray, max_objects: int) -> list[list[dict]]:
    """COCO RLE of each object's mask: a list over M objects of lists over T frames."""
    return [mask_utils.encode(np.asfortranarray((seg == m + 1).transpose(1, 2, 0).astype(np.uint8)))
            for m in range(max_objects)]


def _cam_to_world(scene: rc.Scene) -> np.ndarray:
    poses = np.zeros((len(scene.cam_pos), 4, 4), np.float32)
    poses[:, :3, :3], poses[:, :3, 3], poses[:, 3, 3] = scene.cam_rot, scene.cam_pos, 1
    return poses


def render_clip(cfg: WorldConfig, split: str, index: int) -> dict[str, Any]:
    """Clip ``index`` of ``split``, with every ground-truth key (``segmentation``, not ``masks``)."""
    rng = np.random.default_rng([_CLIP_STREAM, cfg.seed, split_id(split), index])
    label = clip_label(cfg, split, index)
    scene = _scene(_sample_layout(rng, cfg.max_objects), label, cfg.num_frames, cfg.resolution)
    video, depth, seg = rc.render(scene, cfg.resolution, cfg.resolution, cfg.shadows)
    boxes, box_valid = boxes_from_segmentation(seg, cfg.max_objects)
    return {"video": video, "depth": depth, "intrinsics": scene.K.astype(np.float32),
            "cam_to_world": _cam_to_world(scene), **_tracks(rng, scene, seg, cfg), "boxes": boxes,
            "box_valid": box_valid, "segmentation": seg, "label": label}


# ---------------------------------------------------------------- dataset

@DATASETS.register("synthetic")
class SyntheticWorld(torch.utils.data.Dataset):
    """One split of the synthetic world, generated once into ``<root>/world/<fingerprint>`` and memory-mapped."""

    provides: tuple[str, ...] = ARRAY_KEYS + ("masks",)
    config_class = WorldConfig  # its fields are the dataset's config keys (bench.config.dataset_options)

    def __init__(self, cfg: WorldConfig | None = None, split: str = "train", root: str | Path = "cache",
                 **overrides: Any):
        try:
            self.cfg = dataclasses.replace(cfg or WorldConfig(), **overrides)
        except TypeError as exc:
            fields = [f.name for f in dataclasses.fields(WorldConfig)]
            raise ConfigError(f"synthetic world: {exc}; its options are {fields}") from exc
        self.split = split
        if self.cfg.size(split) < 1 or self.cfg.max_objects < 1:
            raise ConfigError(f"synthetic world: {split} needs at least one clip and max_objects >= 1")
        self.directory = Path(root) / "world" / self.fingerprint
        self._arrays = load_or_build(self.directory, partial(render_clip, self.cfg, split), self.cfg.size(split),
                                     default_workers(self.cfg.workers), f"world {split} {self.fingerprint[:8]}",
                                     {"version": GENERATOR_VERSION, **self.meta}, prefix=self.smaller_split)

    def smaller_splits(self) -> list[tuple[int, Path]]:
        """(clips, directory) of every cached split of this world with fewer clips, largest first:
        clip i is a pure function of (seed, split, i), so their clips are this split's first ones
        (the feature cache reuses them too; ``bench.features``)."""
        same = {k: v for k, v in dataclasses.asdict(self.cfg).items() if k not in SIZE_KEYS}
        found = []
        for manifest in self.directory.parent.glob(f"*/{MANIFEST}"):
            try:
                meta = json.loads(manifest.read_text())
                config = {k: v for k, v in meta["config"].items() if k not in SIZE_KEYS}
                if (meta["version"], meta["split"], config) == (GENERATOR_VERSION, self.split, same):
                    found.append((int(meta["clips"]), manifest.parent))
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                continue  # not a world split of this version: ignored
        return sorted((f for f in found if f[0] < len(self)), key=lambda f: -f[0])

    def smaller_split(self) -> dict[str, np.ndarray] | None:
        """The arrays of the largest complete cached split of ``smaller_splits``, or None."""
        return first_open((directory for _, directory in self.smaller_splits()), open_cache)

    @cached_property
    def fingerprint(self) -> str:
        return fingerprint(self.cfg, self.split)

    @property
    def meta(self) -> dict[str, Any]:
        c = self.cfg
        return {"label_names": LABEL_NAMES, "num_classes": len(LABEL_NAMES), "resolution": c.resolution,
                "num_frames": c.num_frames, "num_points": c.num_points, "max_objects": c.max_objects,
                "split": self.split, "config": dataclasses.asdict(c)}

    def __len__(self) -> int:
        return self.cfg.size(self.split)

    def __getitem__(self, i: int) -> dict[str, Any]:
        i = range(len(self))[i]
        clip: dict[str, Any] = {k: np.array(a[i]) for k, a in self._arrays.items()}
        clip["label"] = int(clip["label"])
        clip["masks"] = segmentation_to_rle(clip["segmentation"], self.cfg.max_objects)
        return clip

    def arrays(self, keys: Iterable[str]) -> dict[str, np.ndarray]:
        """Whole-split memory maps [num_clips, ...] for the given keys (``masks`` is per clip only)."""
        keys = list(keys)
        missing = [k for k in keys if k not in self._arrays]
        if missing:
            raise KeyError(f"synthetic world has no stacked array for {missing}; it has {list(self._arrays)}"
                           " (masks are built per clip by __getitem__)")
        return {k: self._arrays[k] for k in keys}
