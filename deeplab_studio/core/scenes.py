"""Synthetic segmentation scenes: textured shapes of a few classes on textured backgrounds.

Pure numpy. Each object class has its own shape *and* its own colour/texture statistics, so
a small network learns the scenes quickly, yet backgrounds, sizes, rotations, occlusion,
shadows and lighting vary enough that the task is not trivial:

- ``disk``: round, warm red/orange, shaded like a sphere, fine speckles;
- ``square``: rotated square, cool blue, stripes along one side;
- ``triangle``: rotated triangle, green/yellow, blotchy two-tone pattern.

Backgrounds are desaturated (any hue) with low-frequency noise, a lighting gradient and one of
a few patterns (plain, wood grain, tiles). ``generate_scene(h, w, seed=s)`` is deterministic.
"""

from __future__ import annotations

import colorsys

import numpy as np

from deeplab_studio.core.labels import LabelSet

SCENE_CLASSES: tuple[str, ...] = ("background", "disk", "square", "triangle")
#: overlay colours, chosen to contrast with each class's own object colours (red disks, blue
#: squares, green triangles) so that a proposal is visible over the object it covers
SCENE_COLORS: tuple[tuple[int, int, int], ...] = ((0, 0, 0), (0, 200, 255), (255, 210, 0), (235, 0, 200))

SeedLike = int | tuple[int, ...] | np.random.SeedSequence | None


def scene_labelset() -> LabelSet:
    """The class list of the generated scenes (background, disk, square, triangle)."""
    return LabelSet(list(SCENE_CLASSES), list(SCENE_COLORS))


def generate_scene(
    height: int,
    width: int,
    *,
    seed: SeedLike = None,
    rng: np.random.Generator | None = None,
    min_objects: int = 1,
    max_objects: int = 5,
) -> tuple[np.ndarray, np.ndarray]:
    """One scene: ``(image uint8 H×W×3 RGB, labels uint8 H×W)`` with labels 0..3.

    Give ``seed`` (int, tuple of ints, SeedSequence) for a reproducible scene, or an ``rng``.
    """
    if height < 8 or width < 8:
        raise ValueError(f"a scene is at least 8×8 pixels, not {height}×{width}")
    if not 0 <= min_objects <= max_objects:
        raise ValueError("need 0 <= min_objects <= max_objects")
    if rng is None:
        rng = np.random.default_rng(seed)
    img = _background(rng, height, width)
    labels = np.zeros((height, width), np.uint8)
    size = min(height, width)
    for _ in range(int(rng.integers(min_objects, max_objects + 1))):
        cls = int(rng.integers(1, len(SCENE_CLASSES)))
        radius = max(4.0, size * rng.uniform(0.10, 0.24))
        cx = rng.uniform(0.05, 0.95) * width
        cy = rng.uniform(0.05, 0.95) * height
        _draw_object(rng, img, labels, cls, cx, cy, radius, float(rng.uniform(0, 2 * np.pi)))
    img += rng.normal(0.0, 0.012, img.shape).astype(np.float32)  # sensor noise
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8), labels


def generate_scenes(
    count: int, height: int, width: int, *, seed: int = 0, **kwargs
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``count`` scenes; scene ``i`` is ``generate_scene(height, width, seed=(seed, i))``."""
    return [generate_scene(height, width, seed=(seed, i), **kwargs) for i in range(count)]


# --- textures ------------------------------------------------------------------------------
def value_noise(rng: np.random.Generator, height: int, width: int, cell: float) -> np.ndarray:
    """Smooth noise in [0, 1] (H×W float32): random values on a grid of ``cell`` pixels, interpolated."""
    cell = max(float(cell), 1.0)
    gh, gw = int(height / cell) + 3, int(width / cell) + 3
    grid = rng.random((gh, gw), dtype=np.float32)
    oy, ox = rng.random(2) * cell
    ys = (np.arange(height, dtype=np.float32) + oy) / cell
    xs = (np.arange(width, dtype=np.float32) + ox) / cell
    y0, x0 = ys.astype(np.int64), xs.astype(np.int64)
    fy, fx = ys - y0, xs - x0
    fy, fx = (fy * fy * (3 - 2 * fy))[:, None], (fx * fx * (3 - 2 * fx))[None, :]  # smoothstep
    a, b = grid[y0][:, x0], grid[y0][:, x0 + 1]
    c, d = grid[y0 + 1][:, x0], grid[y0 + 1][:, x0 + 1]
    return (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), np.float32)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    size = min(h, w)
    base = _hsv(rng.random(), rng.uniform(0.0, 0.28), rng.uniform(0.35, 0.8))
    other = _hsv(rng.random(), rng.uniform(0.0, 0.28), rng.uniform(0.3, 0.85))
    mix = value_noise(rng, h, w, size * rng.uniform(0.3, 0.7)) * rng.uniform(0.2, 0.6)
    img = base * (1 - mix[..., None]) + other * mix[..., None]
    shade = 1.0 + 0.25 * (value_noise(rng, h, w, size * rng.uniform(0.08, 0.2)) - 0.5)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * xx + np.sin(angle) * yy) / max(h, w)
    shade *= 1.0 + rng.uniform(0.1, 0.35) * (ramp - ramp.mean())  # lighting gradient
    pattern = int(rng.integers(0, 3))
    if pattern == 1:  # wood grain: wavy bands along a random direction
        a = rng.uniform(0, np.pi)
        t = (np.cos(a) * xx + np.sin(a) * yy) / size
        warp = value_noise(rng, h, w, size * 0.25) * 2.5
        shade *= 1.0 + 0.08 * np.sin(2 * np.pi * (t * rng.uniform(6, 14) + warp))
    elif pattern == 2:  # tiles: faint grout lines
        period = size * rng.uniform(0.15, 0.3)
        line = (np.minimum(xx % period, yy % period) < max(1.0, size / 96)).astype(np.float32)
        shade *= 1.0 - 0.12 * line
    return (img * shade[..., None]).astype(np.float32)


# --- objects -------------------------------------------------------------------------------
def _sdf(cls: int, u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    """Signed distance (pixels, > 0 inside) of the class's shape centred at 0, in rotated coords."""
    if cls == 1:  # disk
        return r - np.sqrt(u * u + v * v)
    if cls == 2:  # square of half-side 0.85 r
        return 0.85 * r - np.maximum(np.abs(u), np.abs(v))
    # equilateral triangle with circumradius 1.4 r: three half-planes at inradius 0.7 r
    inr = 0.7 * r
    d = None
    for k in range(3):
        a = np.pi / 2 + k * 2 * np.pi / 3
        dk = inr - (np.cos(a) * u + np.sin(a) * v)
        d = dk if d is None else np.minimum(d, dk)
    return d


def _texture(rng: np.random.Generator, cls: int, u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    """RGB float (h×w×3) colour of the object's surface."""
    h, w = u.shape
    if cls == 1:  # warm, sphere shading, speckles
        col = _hsv(rng.uniform(-0.03, 0.08), rng.uniform(0.6, 0.9), rng.uniform(0.7, 0.95))
        lx, ly = rng.uniform(-0.5, 0.5, 2) * r
        shade = 1.15 - 0.55 * np.clip(np.sqrt((u - lx) ** 2 + (v - ly) ** 2) / (1.5 * r), 0, 1)
        spots = (value_noise(rng, h, w, max(1.5, r / 6)) > 0.72).astype(np.float32)
        out = col * shade[..., None]
        return out * (1 - 0.35 * spots[..., None])
    if cls == 2:  # cool, stripes along u
        col = _hsv(rng.uniform(0.55, 0.68), rng.uniform(0.5, 0.85), rng.uniform(0.6, 0.9))
        col2 = _hsv(rng.uniform(0.55, 0.68), rng.uniform(0.2, 0.5), rng.uniform(0.85, 1.0))
        period = max(3.0, r * rng.uniform(0.3, 0.5))
        t = (0.5 + 0.5 * np.sin(2 * np.pi * u / period)) ** 3
        return col * (1 - t[..., None]) + col2 * t[..., None]
    # green/yellow, blotchy two-tone
    col = _hsv(rng.uniform(0.2, 0.36), rng.uniform(0.55, 0.9), rng.uniform(0.55, 0.85))
    col2 = _hsv(rng.uniform(0.12, 0.2), rng.uniform(0.6, 0.9), rng.uniform(0.75, 1.0))
    t = np.clip((value_noise(rng, h, w, max(2.0, r / 3)) - 0.35) * 3.0, 0, 1)
    return col * (1 - t[..., None]) + col2 * t[..., None]


def _draw_object(
    rng: np.random.Generator, img: np.ndarray, labels: np.ndarray, cls: int,
    cx: float, cy: float, r: float, angle: float,
) -> None:
    """Draw one object (shadow, anti-aliased body, dark rim) into ``img`` and ``labels``."""
    h, w = labels.shape
    sx, sy = rng.uniform(0.05, 0.15, 2) * r  # shadow offset
    reach = 1.45 * r + max(sx, sy) + 2
    y0, y1 = max(0, int(cy - reach)), min(h, int(cy + reach) + 1)
    x0, x1 = max(0, int(cx - reach)), min(w, int(cx + reach) + 1)
    if y0 >= y1 or x0 >= x1:
        return
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    yy += 0.5
    xx += 0.5
    c, s = np.cos(angle), np.sin(angle)

    def local(dx: float, dy: float) -> tuple[np.ndarray, np.ndarray]:
        px, py = xx - cx - dx, yy - cy - dy
        return c * px + s * py, -s * px + c * py

    win = img[y0:y1, x0:x1]
    shadow = np.clip((_sdf(cls, *local(sx, sy), r) + 2.0) / 4.0, 0, 1)
    win *= (1.0 - 0.35 * shadow)[..., None]
    u, v = local(0.0, 0.0)
    d = _sdf(cls, u, v, r)
    alpha = np.clip(d + 0.5, 0, 1)[..., None]
    surface = _texture(rng, cls, u, v, r)
    rim = np.clip(d / max(1.5, r * 0.08), 0, 1)[..., None]
    surface = surface * (0.6 + 0.4 * rim)
    win[...] = win * (1 - alpha) + surface * alpha
    labels[y0:y1, x0:x1][d > 0] = cls
