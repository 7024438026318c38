"""Numpy ray casting of a closed, textured room holding rigid primitives (sphere, box, cylinder).

Rays are ``o + s * d`` with the camera-frame direction scaled to unit z, so the hit parameter ``s``
of a camera ray is its z-depth. Per-ray values only meet +, -, *, /, sqrt, floor and integer
hashing (no BLAS, no SIMD transcendentals), so a render is bit-identical on every machine.
Vectors are stored component-first: [3, R] for R rays.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SHAPES = ("sphere", "box", "cylinder")
RAYS_PER_CHUNK = 1 << 17  # rays cast at once: bounds memory at high resolution
_TINY = 1e-12


@dataclass
class Material:
    """A procedural two-colour pattern of 3D position, evaluated in the surface's own frame."""

    pattern: str  # "checker" | "stripes" | "noise" | "plain"
    colors: np.ndarray  # [2, 3] RGB in [0, 1]
    scale: float = 4.0  # pattern cells per metre
    phase: float = 0.37  # keeps cell borders off the planes where faces lie
    axis: tuple[float, float, float] = (1.0, 0.0, 0.0)  # stripe normal
    salt: int = 0  # noise hash salt

    def albedo(self, p: np.ndarray) -> np.ndarray:
        """RGB [R, 3] at points p [3, R]."""
        w = _PATTERNS[self.pattern](self, p)
        c0, c1 = self.colors
        return c0 + (c1 - c0) * w[:, None]


def _cells(m: Material, p: np.ndarray, scale: float) -> list[np.ndarray]:
    return [np.floor(scale * p[i] + m.phase) for i in range(3)]


def _hash01(cells: list[np.ndarray], salt: int) -> np.ndarray:
    """A value in [0, 1] per integer lattice cell (uint64 arithmetic wraps identically everywhere)."""
    h = np.full(cells[0].shape, salt * 0x9E3779B97F4A7C15 % (1 << 64), np.uint64)
    for c, prime in zip(cells, (0x8DA6B343, 0xD8163841, 0xCB1AB31F)):
        h = (h ^ (c.astype(np.int64).astype(np.uint64) * np.uint64(prime))) * np.uint64(0xFF51AFD7ED558CCD)
        h ^= h >> np.uint64(29)
    return (h >> np.uint64(40) & np.uint64(1023)).astype(np.float64) / 1023.0


_PATTERNS = {
    "checker": lambda m, p: sum(_cells(m, p, m.scale)) % 2,
    "stripes": lambda m, p: np.floor(m.scale * (m.axis[0] * p[0] + m.axis[1] * p[1] + m.axis[2] * p[2]) + m.phase) % 2,
    "noise": lambda m, p: 0.6 * _hash01(_cells(m, p, m.scale), m.salt) + 0.4 * _hash01(_cells(m, p, 2.7 * m.scale),
                                                                                        m.salt + 1),
    "plain": lambda m, p: np.zeros(p.shape[1]),
}


@dataclass
class Body:
    """A rigid primitive with its pose at every frame."""

    shape: str  # one of SHAPES
    size: tuple[float, ...]  # sphere (radius,); box half extents (x, y, z); cylinder (radius, half height) along z
    rot: np.ndarray  # [T, 3, 3] body-to-world rotation
    pos: np.ndarray  # [T, 3] centre
    material: Material


@dataclass
class Scene:
    """Everything a render needs: room, bodies, camera path, intrinsics and light."""

    room: np.ndarray  # [2, 3] lower and upper corner (metres, z up)
    floor: Material
    wall: Material
    ceiling: Material
    bodies: list[Body]
    cam_rot: np.ndarray  # [T, 3, 3] camera-to-world rotation, OpenCV axes (x right, y down, z forward)
    cam_pos: np.ndarray  # [T, 3]
    K: np.ndarray  # [3, 3] pixel intrinsics (pixel centres at integer + 0.5)
    light: np.ndarray  # (3,) point light
    ambient: float = 0.35


def bounding_radius(shape: str, size: tuple[float, ...]) -> float:
    """Radius of the sphere around the body's centre that contains it."""
    return math.sqrt(sum(v * v for v in size)) if shape != "sphere" else size[0]


def _per_ray(m: np.ndarray, frames: np.ndarray | None, inverse: bool) -> np.ndarray:
    """Entries [9, R] of m[frames] (transposed if ``inverse``); frames None: m is already per vector."""
    m9 = (m.transpose(0, 2, 1) if inverse else m).reshape(len(m), 9).T
    return m9[:, frames] if frames is not None else m9


def _apply(m9: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.stack([m9[3 * i] * v[0] + m9[3 * i + 1] * v[1] + m9[3 * i + 2] * v[2] for i in range(3)])


def rotate(m: np.ndarray, v: np.ndarray, frames: np.ndarray | None = None, inverse: bool = False) -> np.ndarray:
    """m[frames] @ v (transposed m if ``inverse``) for per-frame rotations m [T, 3, 3] and vectors
    v [3, R] (frames None: m is already per vector), summed in a fixed order (no BLAS)."""
    return _apply(_per_ray(m, frames, inverse), v)


def _at(pos: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """Per-frame points [T, 3] at the given frames, component-first [3, R]."""
    return pos.T[:, frames]


def matmul3(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b for stacks of 3x3 matrices, summed in a fixed order (no BLAS)."""
    return sum(a[..., :, k:k + 1] * b[..., k:k + 1, :] for k in range(3))


def _dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def _positive(s: np.ndarray) -> np.ndarray:
    return np.where(s > 0, s, np.inf)


def _hit_sphere(o: np.ndarray, d: np.ndarray, size: tuple[float, ...]) -> np.ndarray:
    a, b, c = _dot(d, d), _dot(o, d), _dot(o, o) - size[0] ** 2
    disc = b * b - a * c
    return _positive(np.where(disc >= 0, (-b - np.sqrt(np.maximum(disc, 0))) / a, np.inf))


def _hit_box(o: np.ndarray, d: np.ndarray, size: tuple[float, ...]) -> np.ndarray:
    near, far = np.full(o.shape[1], -np.inf), np.full(o.shape[1], np.inf)
    for i in range(3):
        inv = 1.0 / np.where(d[i] == 0, _TINY, d[i])
        t1, t2 = (-size[i] - o[i]) * inv, (size[i] - o[i]) * inv
        near, far = np.maximum(near, np.minimum(t1, t2)), np.minimum(far, np.maximum(t1, t2))
    return _positive(np.where(near <= far, near, np.inf))


def _hit_cylinder(o: np.ndarray, d: np.ndarray, size: tuple[float, ...]) -> np.ndarray:
    r, h = size
    a = d[0] * d[0] + d[1] * d[1]
    b = o[0] * d[0] + o[1] * d[1]
    disc = b * b - a * (o[0] * o[0] + o[1] * o[1] - r * r)
    side = (-b - np.sqrt(np.maximum(disc, 0))) / np.maximum(a, _TINY)
    best = _positive(np.where((disc >= 0) & (np.abs(o[2] + side * d[2]) <= h), side, np.inf))
    dz = np.where(d[2] == 0, _TINY, d[2])
    for z in (-h, h):
        s = (z - o[2]) / dz
        x, y = o[0] + s * d[0], o[1] + s * d[1]
        best = np.minimum(best, _positive(np.where(x * x + y * y <= r * r, s, np.inf)))
    return best


_HITS = {"sphere": _hit_sphere, "box": _hit_box, "cylinder": _hit_cylinder}


def _hit_room(room: np.ndarray, o: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Exit parameter of rays starting inside the room box."""
    s = np.full(o.shape[1], np.inf)
    for i in range(3):
        wall = np.where(d[i] > 0, room[1, i], room[0, i])
        s = np.minimum(s, np.where(d[i] == 0, np.inf, (wall - o[i]) / np.where(d[i] == 0, 1.0, d[i])))
    return s


def _body_frame(body: Body, frames: np.ndarray, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rays (world) -> rays in the body's frame at the given frames (same parameter s)."""
    inv = _per_ray(body.rot, frames, True)
    return _apply(inv, o - _at(body.pos, frames)), _apply(inv, d)


def cast(scene: Scene, frames: np.ndarray, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """First hit of rays o + s d (at the given frame indices): s [R], surface id [R] (0 room,
    k body k) and the hit point in that surface's frame [3, R] (world for the room)."""
    s = _hit_room(scene.room, o, d)
    ids = np.zeros(len(s), np.uint8)
    for k, body in enumerate(scene.bodies, 1):
        sk = _HITS[body.shape](*_body_frame(body, frames, o, d), body.size)
        closer = sk < s
        s = np.where(closer, sk, s)
        ids[closer] = k
    local = o + s * d
    for k, body in enumerate(scene.bodies, 1):
        sel = ids == k
        local[:, sel] = rotate(body.rot, local[:, sel] - _at(body.pos, frames[sel]), frames[sel], True)
    return s, ids, local


def camera_rays(scene: Scene, frames: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World rays (origin [3, R], direction [3, R] with unit camera z) through pixel coords (x, y)."""
    k = scene.K
    cam = np.stack([(x - k[0, 2]) / k[0, 0], (y - k[1, 2]) / k[1, 1], np.ones(len(x))])
    return _at(scene.cam_pos, frames), rotate(scene.cam_rot, cam, frames)


def project(scene: Scene, frames: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """World points [3, R] -> pixel x, y and camera z-depth at the given frames."""
    c = rotate(scene.cam_rot, p - _at(scene.cam_pos, frames), frames, True)
    k = scene.K
    with np.errstate(divide="ignore", invalid="ignore"):
        return k[0, 0] * c[0] / c[2] + k[0, 2], k[1, 1] * c[1] / c[2] + k[1, 2], c[2]


def _body_normal(shape: str, size: tuple[float, ...], p: np.ndarray) -> np.ndarray:
    """Outward unit normal [3, R] at local surface points p."""
    if shape == "sphere":
        return p / size[0]
    if shape == "box":
        rel = np.abs(p) / np.asarray(size)[:, None]
        face = rel.argmax(0)
        n = np.zeros_like(p)
        n[face, np.arange(p.shape[1])] = np.sign(p[face, np.arange(p.shape[1])])
        return n
    r, h = size
    radial = np.sqrt(p[0] * p[0] + p[1] * p[1])
    cap = np.abs(p[2]) / h >= radial / r
    safe = np.maximum(radial, _TINY)
    return np.stack([np.where(cap, 0.0, p[0] / safe), np.where(cap, 0.0, p[1] / safe), np.where(cap, np.sign(p[2]), 0.0)])


def _shade_room(scene: Scene, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Albedo [R, 3] and inward normal [3, R] of room points p [3, R]."""
    lo, hi = scene.room[0][:, None], scene.room[1][:, None]
    gap = np.concatenate([p - lo, hi - p])  # [6, R]: distance to each face
    face = gap.argmin(0)
    normal = np.zeros_like(p)
    normal[face % 3, np.arange(p.shape[1])] = np.where(face < 3, 1.0, -1.0)
    albedo = scene.wall.albedo(p)
    for material, which in ((scene.floor, 2), (scene.ceiling, 5)):
        sel = face == which
        albedo[sel] = material.albedo(p[:, sel])
    return albedo, normal


def _in_shadow(scene: Scene, frames: np.ndarray, p: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Whether another body blocks the segment from each point to the light."""
    d = scene.light[:, None] - p
    blocked = np.zeros(p.shape[1], bool)
    for k, body in enumerate(scene.bodies, 1):
        blocked |= (_HITS[body.shape](*_body_frame(body, frames, p, d), body.size) < 1) & (ids != k)
    return blocked


def shade(scene: Scene, frames: np.ndarray, world: np.ndarray, ids: np.ndarray, local: np.ndarray,
          shadows: bool) -> np.ndarray:
    """Lambertian colour [R, 3] in [0, 1] of hit points: albedo x (ambient + diffuse point light)."""
    albedo, normal = _shade_room(scene, world)
    for k, body in enumerate(scene.bodies, 1):
        sel = ids == k
        albedo[sel] = body.material.albedo(local[:, sel])
        normal[:, sel] = rotate(body.rot, _body_normal(body.shape, body.size, local[:, sel]), frames[sel])
    to_light = scene.light[:, None] - world
    diffuse = np.maximum(_dot(normal, to_light), 0) / np.sqrt(_dot(to_light, to_light))
    if shadows:
        diffuse[_in_shadow(scene, frames, world, ids)] = 0
    return albedo * (scene.ambient + (1 - scene.ambient) * diffuse)[:, None]


def render(scene: Scene, height: int, width: int, shadows: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ray cast every frame: RGB uint8 [T, H, W, 3], z-depth float32 [T, H, W], surface ids uint8 [T, H, W]."""
    frames_total, pixels = len(scene.cam_pos), height * width
    rgb = np.empty((frames_total, pixels, 3), np.uint8)
    depth = np.empty((frames_total, pixels), np.float32)
    seg = np.empty((frames_total, pixels), np.uint8)
    ys, xs = np.divmod(np.arange(pixels), width)
    step = max(1, RAYS_PER_CHUNK // pixels)
    for t0 in range(0, frames_total, step):
        n = min(step, frames_total - t0)
        frames = np.repeat(np.arange(t0, t0 + n), pixels)
        o, d = camera_rays(scene, frames, np.tile(xs + 0.5, n), np.tile(ys + 0.5, n))
        s, ids, local = cast(scene, frames, o, d)
        color = shade(scene, frames, o + s * d, ids, local, shadows)
        rgb[t0:t0 + n] = np.clip(np.floor(color * 255 + 0.5), 0, 255).reshape(n, pixels, 3)
        depth[t0:t0 + n], seg[t0:t0 + n] = s.reshape(n, pixels), ids.reshape(n, pixels)
    shape = (frames_total, height, width)
    return rgb.reshape(*shape, 3), depth.reshape(shape), seg.reshape(shape)
