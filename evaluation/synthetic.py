"""Seeded synthetic industrial-inspection data: several product kinds, defects with pixel masks.

Used by the tests, the ``registry demo`` command and benchmarks, where real MVTec AD / VisA data
is not available. Each kind is a distinct product type (woven carpet, metal grid, round pill,
screw, terrazzo tile, wood) with its own colours and structure, so a frozen ImageNet CNN tells the
kinds apart; normal images vary a little (position, a few degrees of rotation, pattern phase,
illumination, colour, sensor noise) so anomaly detection is not trivial. Defects come with exact
pixel masks: ``scratch`` (thin random curve), ``spot`` (stain of another colour), ``missing``
(a cut-out showing the background or backing) and ``crack`` (dark jagged branching line); a
defect covers 0.2-5% of the image by default. Images are square unless a ``height`` is given;
``HIGH_RESOLUTION_SHAPE`` (2048 x 1536) with ``SMALL_DEFECT_FRACTION`` (0.05-0.5% of the area)
is the high-resolution set of small defects (``experiments/geometry/make_high_resolution.py``).

Everything is a deterministic function of the seed (``np.random.default_rng``, never the global
RNG). A defective image with seed ``s`` is the good image with seed ``s`` plus the defect.

Example:
    >>> img, mask = make_image("pill", seed=3, defect="spot")
    >>> img.shape, img.dtype, mask.dtype
    ((256, 256, 3), dtype('uint8'), dtype('bool'))
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image
from scipy import ndimage

__all__ = [
    "CATEGORY_KINDS",
    "DEFECT_TYPES",
    "HIGH_RESOLUTION_SHAPE",
    "MAX_DEFECT_FRACTION",
    "MIN_DEFECT_FRACTION",
    "SMALL_DEFECT_FRACTION",
    "SyntheticCategory",
    "make_category",
    "make_image",
    "write_dataset",
    "write_mvtec_layout",
]

CATEGORY_KINDS: tuple[str, ...] = ("carpet", "grid", "pill", "screw", "tile", "wood")
"""The product kinds, in a fixed order."""

DEFECT_TYPES: tuple[str, ...] = ("scratch", "spot", "missing", "crack")
"""The defect types, in a fixed order (test images of a category cycle through them)."""

MIN_DEFECT_FRACTION = 0.002
"""Smallest share of the image a defect mask covers."""

MAX_DEFECT_FRACTION = 0.05
"""Largest share of the image a defect mask covers."""

HIGH_RESOLUTION_SHAPE: tuple[int, int] = (1536, 2048)
"""(height, width) of the high-resolution set: a 3-megapixel line camera's frame."""

SMALL_DEFECT_FRACTION: tuple[float, float] = (0.0005, 0.005)
"""Defect area range (share of the image) of the high-resolution set: 0.05-0.5%."""

_MIN_VISIBILITY = 0.06  # mean absolute RGB change inside a defect mask
_MAX_ATTEMPTS = 40

FloatImage = NDArray[np.float32]
Color = tuple[float, float, float]


@dataclass
class _Scene:
    """A rendered normal image before illumination and noise.

    Attributes:
        image: (H, W, 3) float32 in [0, 1].
        obj: (H, W) bool, where the product is (everywhere for textures).
        backing: makes the (H, W, 3) image a missing part reveals (background or backing
            material) from a generator; called only for ``missing`` defects, so good images do
            not pay for it.
        stains: colours of stains that contrast with the product.
        axis: direction (radians, image x towards y) of an elongated product, else None.
        is_object: a product on a background (missing parts are cut at its border).
    """

    image: FloatImage
    obj: NDArray[np.bool_]
    backing: Callable[[np.random.Generator], FloatImage]
    stains: tuple[Color, ...]
    axis: float | None
    is_object: bool


@dataclass
class SyntheticCategory:
    """One synthetic category: train-good images and a labelled test set.

    Attributes:
        kind: product kind, one of :data:`CATEGORY_KINDS`.
        seed: the seed the category was made from.
        train_images: (N_train, H, W, 3) uint8, all good.
        test_images: (N_test, H, W, 3) uint8, the good ones first.
        test_labels: (N_test,) int64, 0 = good, 1 = defective.
        test_masks: (N_test, H, W) bool defect masks (all False for good images).
        test_defects: N_test names: ``"good"`` or one of :data:`DEFECT_TYPES`.
    """

    kind: str
    seed: int
    train_images: NDArray[np.uint8]
    test_images: NDArray[np.uint8]
    test_labels: NDArray[np.int64]
    test_masks: NDArray[np.bool_]
    test_defects: list[str]

    @property
    def size(self) -> int:
        """Width of the images in pixels (their side length when square)."""
        return int(self.train_images.shape[2])

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) of the images in pixels."""
        return int(self.train_images.shape[1]), int(self.train_images.shape[2])


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def _coords(size: int) -> tuple[FloatImage, FloatImage]:
    """Pixel-centre coordinates in [-1, 1]: x as (1, W), y as (H, 1)."""
    c = ((np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0).astype(np.float32)
    return c[None, :], c[:, None]


def _rotated(
    size: int,
    angle: float,
    shift: tuple[float, float] = (0.0, 0.0),
    window: tuple[slice, slice] = (slice(None), slice(None)),
) -> tuple[FloatImage, FloatImage]:
    """Coordinates (u, v), (H, W) each, rotated by ``angle`` about the shifted centre.

    ``window`` (rows, columns) restricts the result to a sub-rectangle of the image.
    """
    x, y = _coords(size)
    x = x[:, window[1]] - np.float32(shift[0])
    y = y[window[0], :]
    y = y - np.float32(shift[1])
    ca, sa = np.float32(math.cos(angle)), np.float32(math.sin(angle))
    return ca * x + sa * y, -sa * x + ca * y


@functools.lru_cache(maxsize=64)
def _spline_taps(size: int, cell: float) -> tuple[NDArray[np.intp], NDArray[np.float32], int]:
    """Cubic B-spline taps to interpolate ``size`` pixels from an n-point lattice spaced ``cell`` px.

    Returns:
        ``(index, weight, n)``: (size, 4) lattice indices and weights, and the lattice length.
    """
    n = math.ceil(size / cell) + 4
    pos = (np.arange(size, dtype=np.float64) + 0.5) / cell + 1.5  # lattice coordinates
    base = np.floor(pos).astype(np.intp)
    t = pos - base
    weight = np.stack(  # uniform cubic B-spline basis for the lattice points base-1 .. base+2
        [(1 - t) ** 3 / 6, (3 * t**3 - 6 * t**2 + 4) / 6, (-3 * t**3 + 3 * t**2 + 3 * t + 1) / 6, t**3 / 6],
        axis=1,
    ).astype(np.float32)
    index = base[:, None] + np.arange(-1, 3)[None, :]
    return index, weight, n


def _noise(rng: np.random.Generator, size: int, cell_y: float, cell_x: float | None = None) -> FloatImage:
    """Smooth Gaussian noise (zero mean, unit std) with a feature size of ``cell`` pixels.

    White noise on a coarse lattice, interpolated with a separable cubic B-spline (4 taps per
    axis, no BLAS so that it stays fast under thread contention); ``cell <= 1`` gives plain white
    noise.
    """
    cx = cell_y if cell_x is None else cell_x
    if cell_y <= 1.0 and cx <= 1.0:  # white; uniform is ~5x faster to draw than normal
        return ((rng.random((size, size), dtype=np.float32) - 0.5) * np.float32(math.sqrt(12.0))).astype(np.float32)
    iy, wy, ny = _spline_taps(size, max(cell_y, 1.0))
    ix, wx, nx = _spline_taps(size, max(cx, 1.0))
    low = rng.standard_normal((ny, nx), dtype=np.float32)
    rows = low[iy[:, 0]] * wy[:, 0, None]
    for k in range(1, 4):
        rows += low[iy[:, k]] * wy[:, k, None]
    out = rows[:, ix[:, 0]] * wx[None, :, 0]
    for k in range(1, 4):
        out += rows[:, ix[:, k]] * wx[None, :, k]
    std = float(out.std())
    return ((out - out.mean()) / (std if std > 0 else 1.0)).astype(np.float32)


def _smoothstep_edge(signed_dist_px: NDArray[np.floating[Any]]) -> FloatImage:
    """Anti-aliased coverage from a signed distance in pixels (positive inside)."""
    return np.clip(signed_dist_px + 0.5, 0.0, 1.0).astype(np.float32)


def _mix(a: FloatImage, b: FloatImage, alpha: FloatImage) -> FloatImage:
    """``a * (1 - alpha) + b * alpha`` with ``alpha`` (H, W) broadcast over channels."""
    al = alpha[..., None]
    return (a * (1.0 - al) + b * al).astype(np.float32)


def _u(rng: np.random.Generator, low: float, high: float) -> float:
    """One uniform draw as a Python float (a NumPy float64 scalar would promote float32 arrays)."""
    return float(rng.uniform(low, high))


def _rgb(color: Sequence[float] | NDArray[np.float32]) -> NDArray[np.float32]:
    """A colour as a float32 (3,) array, broadcastable against (H, W, 3) images."""
    return np.asarray(color, dtype=np.float32)


def _jitter_color(rng: np.random.Generator, color: Color, amount: float) -> NDArray[np.float32]:
    return np.clip(np.asarray(color, dtype=np.float32) + rng.uniform(-amount, amount, 3), 0, 1).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Product kinds
# --------------------------------------------------------------------------------------------


def _textured_backing(
    color: Color, amount: float, cell: float, size: int
) -> Callable[[np.random.Generator], FloatImage]:
    """A lazily drawn backing material: a colour modulated by smooth noise."""

    def draw(rng: np.random.Generator) -> FloatImage:
        return (_rgb(color) * (1 + amount * _noise(rng, size, cell))[..., None]).astype(np.float32)

    return draw


def _render_carpet(rng: np.random.Generator, size: int) -> _Scene:
    """Basket-woven fabric: cells of three parallel threads alternating direction."""
    u, v = _rotated(size, math.radians(_u(rng, -4, 4)))
    period = 2.0 / _u(rng, 18.0, 21.0)  # cell size in normalised units (~13 px at 256)
    fu = u / period + _u(rng, 0, 2)
    fv = v / period + _u(rng, 0, 2)
    across_h = 0.5 + 0.5 * np.cos(2 * np.pi * 3 * fv)
    across_v = 0.5 + 0.5 * np.cos(2 * np.pi * 3 * fu)
    checker = (np.floor(fu) + np.floor(fv)) % 2 == 0
    weave = np.where(checker, across_h, across_v)
    fibre = _noise(rng, size, 1.5, 4.0)
    lum = 0.5 + 0.45 * weave + 0.07 * fibre
    base = _jitter_color(rng, (0.62, 0.26, 0.2), 0.03)
    image = np.clip(lum[..., None] * base, 0, 1).astype(np.float32)
    return _Scene(
        image=image,
        obj=np.ones((size, size), dtype=bool),
        backing=_textured_backing((0.1, 0.07, 0.06), 0.1, 3.0, size),
        stains=((0.15, 0.3, 0.7), (0.92, 0.88, 0.62), (0.05, 0.05, 0.05)),
        axis=None,
        is_object=False,
    )


def _render_grid(rng: np.random.Generator, size: int) -> _Scene:
    """Regular metal wire mesh (diagonal) over a dark gap."""
    u, v = _rotated(size, math.radians(45 + _u(rng, -4, 4)))
    period = 2.0 / _u(rng, 8.5, 9.5)  # ~28 px at 256
    half_w = period * _u(rng, 0.14, 0.17)
    px_per_unit = size / 2.0
    wires = []
    for coord, phase in ((u, _u(rng, 0, 1)), (v, _u(rng, 0, 1))):
        frac = (coord / period + phase) % 1.0
        dist = np.minimum(frac, 1.0 - frac) * period  # to the nearest wire centre line
        cover = _smoothstep_edge((half_w - dist) * px_per_unit)
        shade = 0.55 + 0.45 * np.clip(1.0 - (dist / half_w) ** 2, 0, 1)
        wires.append((cover, shade))
    cover = np.maximum(wires[0][0], wires[1][0])
    shade = np.where(wires[0][0] >= wires[1][0], wires[0][1], wires[1][1])
    metal = _jitter_color(rng, (0.78, 0.79, 0.8), 0.02)
    wire_img = shade[..., None] * metal * (1 + 0.04 * _noise(rng, size, 2.0))[..., None]
    gap = _rgb((0.13, 0.13, 0.14)) * (1 + 0.15 * _noise(rng, size, 16.0))[..., None]
    gap = gap.astype(np.float32)
    return _Scene(
        image=np.clip(_mix(gap, wire_img.astype(np.float32), cover), 0, 1),
        obj=np.ones((size, size), dtype=bool),
        backing=lambda _: gap,
        stains=((0.7, 0.32, 0.08), (0.2, 0.55, 0.3), (0.85, 0.75, 0.15)),
        axis=None,
        is_object=False,
    )


def _render_tile(rng: np.random.Generator, size: int) -> _Scene:
    """Terrazzo-like stochastic texture: a light matrix with dark and ochre flecks."""
    base = _jitter_color(rng, (0.8, 0.76, 0.7), 0.025)
    image = _rgb(base) * (1 + 0.04 * _noise(rng, size, 40.0))[..., None]
    dark = _smoothstep_edge((_noise(rng, size, 5.0) - 1.5) * 6.0)
    ochre = _smoothstep_edge((_noise(rng, size, 7.0) - 1.7) * 6.0)
    grain = 1 + 0.05 * _noise(rng, size, 1.0)
    image = _mix(image.astype(np.float32), _rgb((0.3, 0.3, 0.34)), dark)
    image = _mix(image, _rgb((0.62, 0.48, 0.3)), ochre)
    image = np.clip(image * grain[..., None], 0, 1).astype(np.float32)
    return _Scene(
        image=image,
        obj=np.ones((size, size), dtype=bool),
        backing=_textured_backing((0.42, 0.4, 0.37), 0.12, 2.0, size),
        stains=((0.3, 0.17, 0.07), (0.08, 0.08, 0.1), (0.7, 0.15, 0.1)),
        axis=None,
        is_object=False,
    )


def _render_wood(rng: np.random.Generator, size: int) -> _Scene:
    """Planed wood: growth rings warped by low-frequency noise, fine streaks along the grain."""
    u, v = _rotated(size, math.radians(_u(rng, -4, 4)))
    warp = _noise(rng, size, 14.0, 70.0)
    streaks = _noise(rng, size, 1.2, 25.0)
    freq = _u(rng, 5.0, 7.0)
    rings = 0.5 + 0.5 * np.sin(2 * np.pi * (v * freq + 0.03 * u + 0.35 * warp) + _u(rng, 0, 2 * np.pi))
    rings = rings**2
    light = _jitter_color(rng, (0.82, 0.62, 0.4), 0.03)
    dark = _jitter_color(rng, (0.55, 0.34, 0.17), 0.03)
    image = _mix(_rgb(light), _rgb(dark), rings.astype(np.float32))
    image = np.clip(image * (1 + 0.05 * streaks)[..., None], 0, 1).astype(np.float32)
    return _Scene(
        image=image,
        obj=np.ones((size, size), dtype=bool),
        backing=_textured_backing((0.2, 0.12, 0.06), 0.1, 3.0, size),
        stains=((0.62, 0.12, 0.12), (0.2, 0.27, 0.5), (0.08, 0.06, 0.05)),
        axis=None,
        is_object=False,
    )


def _render_pill(rng: np.random.Generator, size: int) -> _Scene:
    """A round white tablet with a score line and red speckles on a plain blue-grey background."""
    x, y = _coords(size)
    cx, cy = (float(c) for c in rng.uniform(-0.04, 0.04, 2))
    radius = _u(rng, 0.58, 0.62)
    r = np.sqrt((x - cx) ** 2 + (y - cy) ** 2).astype(np.float32)
    px = size / 2.0
    cover = _smoothstep_edge((radius - r) * px)
    u, v = _rotated(size, math.radians(_u(rng, -5, 5)), (cx, cy))
    dome = 0.8 + 0.2 * np.sqrt(np.clip(1 - (r / radius) ** 2, 0, 1))
    highlight = 0.06 * np.exp(-(((x - cx + 0.25) ** 2 + (y - cy + 0.25) ** 2) / 0.05))
    groove = np.exp(-((v * px / 1.6) ** 2)) * (np.abs(u) < 0.8 * radius)
    speck = _smoothstep_edge((_noise(rng, size, 2.0) - 2.3) * 8.0)
    body = _jitter_color(rng, (0.93, 0.91, 0.86), 0.02)
    pill = (dome - 0.3 * groove + highlight)[..., None] * body
    pill = _mix(pill.astype(np.float32), _rgb((0.78, 0.3, 0.26)), 0.8 * speck)
    bg_color = _jitter_color(rng, (0.2, 0.24, 0.32), 0.02)
    vignette = 1 - 0.08 * (x**2 + y**2)
    background = (_rgb(bg_color) * vignette[..., None]).astype(np.float32)
    return _Scene(
        image=np.clip(_mix(background, pill, cover), 0, 1),
        obj=cover >= 0.5,
        backing=lambda _: background,
        stains=((0.5, 0.25, 0.1), (0.35, 0.35, 0.35), (0.78, 0.12, 0.15)),
        axis=None,
        is_object=True,
    )


def _box_window(
    size: int, angle: float, shift: tuple[float, float], u_range: tuple[float, float], v_half: float
) -> tuple[slice, slice]:
    """Pixel window holding the rotated rectangle ``u in u_range, |v| <= v_half`` (plus margin)."""
    ca, sa = math.cos(angle), math.sin(angle)
    xs, ys = [], []
    for u in u_range:
        for v in (-v_half, v_half):
            xs.append((shift[0] + ca * u - sa * v + 1.0) * size / 2.0)
            ys.append((shift[1] + sa * u + ca * v + 1.0) * size / 2.0)
    y0, y1 = max(0, int(min(ys)) - 3), min(size, int(max(ys)) + 4)
    x0, x1 = max(0, int(min(xs)) - 3), min(size, int(max(xs)) + 4)
    return slice(y0, y1), slice(x0, x1)


def _render_screw(rng: np.random.Generator, size: int) -> _Scene:
    """A threaded metal screw (tip, shaft, slotted head) lying on a light plate."""
    angle = math.radians(_u(rng, -8, 8))
    shift = (_u(rng, -0.05, 0.05), _u(rng, -0.05, 0.05))
    shaft_w = _u(rng, 0.07, 0.08)
    metal = _jitter_color(rng, (0.5, 0.52, 0.56), 0.02)
    plate = _jitter_color(rng, (0.86, 0.86, 0.83), 0.015)
    background = _rgb(plate) * (1 + 0.015 * _noise(rng, size, 24.0))[..., None]
    # all of the screw lies in u in [-0.8, 0.6], |v| <= 0.17: render only that window
    win = _box_window(size, angle, shift, (-0.82, 0.62), 0.19)
    u, v = _rotated(size, angle, shift, win)
    px = size / 2.0
    # half-width along the axis: tip (tapering), shaft, then the head
    width = np.where(u < -0.62, shaft_w * np.clip((u + 0.8) / 0.18, 0.0, 1.0), shaft_w)
    width = np.where((u > 0.4) | (u < -0.8), 0.0, width).astype(np.float32)
    shaft_cover = np.where(width > 0, _smoothstep_edge((width - np.abs(v)) * px), np.float32(0.0))
    head_u2 = ((u - 0.5) / 0.1) ** 2
    head_v2 = (v / 0.17) ** 2
    head_r = np.sqrt(np.sqrt(head_u2 * head_u2 + head_v2 * head_v2))  # a rounded square
    head_cover = _smoothstep_edge((1.0 - head_r) * 0.1 * px)
    cover_win = np.maximum(shaft_cover, head_cover)
    cyl = np.sqrt(np.clip(1 - (v / np.maximum(width, 1e-3)) ** 2, 0, 1))
    thread = 0.5 + 0.5 * np.sin(2 * np.pi * (u + 0.35 * v) / 0.045)
    shaft_lum = (0.3 + 0.55 * cyl) * (0.75 + 0.25 * thread)
    head_lum = 0.45 + 0.4 * np.clip(1 - head_v2, 0, 1) - 0.35 * (np.abs(u - 0.5) < 0.012)
    lum = np.where(head_cover > shaft_cover, head_lum, shaft_lum).astype(np.float32)
    cover = np.zeros((size, size), dtype=np.float32)
    cover[win] = cover_win
    # a soft shadow, offset down-right
    off = max(1, size // 100)
    shadow = np.roll(ndimage.gaussian_filter(cover, sigma=size / 90.0, truncate=3.0), (off, off), axis=(0, 1))
    background = (background * (1 - 0.25 * shadow)[..., None]).astype(np.float32)
    image = background.copy()
    image[win] = _mix(background[win], lum[..., None] * metal, cover_win)
    return _Scene(
        image=np.clip(image, 0, 1),
        obj=cover >= 0.5,
        backing=lambda _: background,
        stains=((0.72, 0.38, 0.12), (0.2, 0.45, 0.85), (0.95, 0.95, 0.92)),
        axis=angle,
        is_object=True,
    )


_RENDERERS: dict[str, Callable[[np.random.Generator, int], _Scene]] = {
    "carpet": _render_carpet,
    "grid": _render_grid,
    "pill": _render_pill,
    "screw": _render_screw,
    "tile": _render_tile,
    "wood": _render_wood,
}
assert tuple(sorted(_RENDERERS)) == CATEGORY_KINDS


# --------------------------------------------------------------------------------------------
# Defects
# --------------------------------------------------------------------------------------------


def _pick_pixel(rng: np.random.Generator, region: NDArray[np.bool_]) -> tuple[float, float]:
    """A random pixel (y, x) of a non-empty region, as floats."""
    flat = np.flatnonzero(region)
    i = int(flat[rng.integers(flat.size)])
    return float(i // region.shape[1]), float(i % region.shape[1])


def _start_region(scene: _Scene, margin: float) -> NDArray[np.bool_]:
    """Where a defect may be centred: on the product, away from the image border."""
    m = max(1, int(margin * min(scene.obj.shape)))
    inner = np.zeros(scene.obj.shape, dtype=bool)
    inner[m:-m, m:-m] = True
    region = scene.obj & inner
    return region if region.any() else scene.obj


def _walk(
    rng: np.random.Generator,
    start: tuple[float, float],
    angle: float,
    length: float,
    turn_sd: float,
    curvature: float,
    step: float = 0.5,
) -> NDArray[np.float64]:
    """Points (K, 2) as (y, x) of a smooth random curve centred on ``start``."""
    n = max(2, int(length / step))
    turns = np.cumsum(rng.normal(curvature, turn_sd, n))
    angles = angle + turns - turns[n // 2]
    dy = np.sin(angles) * step
    dx = np.cos(angles) * step
    ys = np.cumsum(dy)
    xs = np.cumsum(dx)
    ys -= ys[n // 2] - start[0]
    xs -= xs[n // 2] - start[1]
    return np.stack([ys, xs], axis=1)


def _jagged(
    rng: np.random.Generator, start: tuple[float, float], angle: float, length: float, seg_px: float
) -> NDArray[np.float64]:
    """Points (K, 2) of a jagged polyline (crack) beginning at ``start``."""
    pts = [np.asarray(start, dtype=np.float64)]
    travelled = 0.0
    while travelled < length:
        seg = _u(rng, 0.5, 1.5) * seg_px
        a = angle + float(rng.normal(0.0, 0.5))
        end = pts[-1] + seg * np.array([math.sin(a), math.cos(a)])
        pts.append(end)
        travelled += seg
    dense = []
    for p0, p1 in itertools.pairwise(pts):
        k = max(2, int(np.linalg.norm(p1 - p0) / 0.5))
        t = np.linspace(0.0, 1.0, k, endpoint=False)[:, None]
        dense.append(p0 + t * (p1 - p0))
    dense.append(pts[-1][None])
    return np.concatenate(dense)


def _stroke(points: NDArray[np.float64], half_width: float, shape: tuple[int, int]) -> FloatImage:
    """Anti-aliased coverage ``shape`` (H, W) of a polyline of dense points with a given half width."""
    height, width = shape
    alpha = np.zeros(shape, dtype=np.float32)
    iy = np.round(points[:, 0]).astype(np.int64)
    ix = np.round(points[:, 1]).astype(np.int64)
    ok = (iy >= 0) & (iy < height) & (ix >= 0) & (ix < width)
    if not ok.any():
        return alpha
    iy, ix = iy[ok], ix[ok]
    pad = math.ceil(half_width) + 2
    y0, y1 = max(0, int(iy.min()) - pad), min(height, int(iy.max()) + pad + 1)
    x0, x1 = max(0, int(ix.min()) - pad), min(width, int(ix.max()) + pad + 1)
    line = np.zeros((y1 - y0, x1 - x0), dtype=bool)
    line[iy - y0, ix - x0] = True
    dist = ndimage.distance_transform_edt(~line).astype(np.float32)
    alpha[y0:y1, x0:x1] = np.clip(half_width + 0.5 - dist, 0.0, 1.0)
    return alpha


def _blob(
    rng: np.random.Generator, center: tuple[float, float], radius: float, shape: tuple[int, int], roughness: float
) -> FloatImage:
    """Anti-aliased coverage ``shape`` (H, W) of an irregular blob (radius perturbed by low harmonics)."""
    alpha = np.zeros(shape, dtype=np.float32)
    reach = radius * (1 + 3 * roughness) + 2
    y0, y1 = max(0, int(center[0] - reach)), min(shape[0], int(center[0] + reach) + 1)
    x0, x1 = max(0, int(center[1] - reach)), min(shape[1], int(center[1] + reach) + 1)
    yy = np.arange(y0, y1, dtype=np.float32)[:, None] - center[0]
    xx = np.arange(x0, x1, dtype=np.float32)[None, :] - center[1]
    d = np.sqrt(yy**2 + xx**2)
    phi = np.arctan2(yy, xx)
    r = np.full_like(d, radius)
    for k in range(2, 7):
        r += radius * roughness * _u(rng, 0, 1) / k * 2 * np.cos(k * phi + _u(rng, 0, 2 * np.pi))
    alpha[y0:y1, x0:x1] = np.clip(r - d + 0.5, 0.0, 1.0)
    return alpha


def _luminance(image: FloatImage) -> FloatImage:
    """Rec. 601 luma (H, W); written out rather than ``@`` to stay off multi-threaded BLAS."""
    return (0.299 * image[..., 0] + 0.587 * image[..., 1] + 0.114 * image[..., 2]).astype(np.float32)


def _defect_scratch(rng: np.random.Generator, scene: _Scene, scale: float) -> tuple[FloatImage, FloatImage, float]:
    cy, cx = _pick_pixel(rng, _start_region(scene, 0.12))
    angle = scene.axis + float(rng.normal(0, 0.15)) if scene.axis is not None else _u(rng, 0, 2 * np.pi)
    unit = scale / 256.0
    pts = _walk(rng, (cy, cx), angle, _u(rng, 0.3, 0.6) * scale, 0.015, _u(rng, -0.004, 0.004))
    alpha = _stroke(pts, _u(rng, 0.9, 1.6) * unit, scene.obj.shape) * scene.obj
    lum = float(_luminance(scene.image)[scene.obj].mean())
    color = (0.95, 0.95, 0.93) if lum < 0.5 else (0.15, 0.13, 0.12)
    return _rgb(color), alpha, 0.85


def _defect_crack(rng: np.random.Generator, scene: _Scene, scale: float) -> tuple[FloatImage, FloatImage, float]:
    cy, cx = _pick_pixel(rng, _start_region(scene, 0.12))
    angle = scene.axis + float(rng.normal(0, 0.3)) if scene.axis is not None else _u(rng, 0, 2 * np.pi)
    unit = scale / 256.0
    length = _u(rng, 0.3, 0.5) * scale
    main = _jagged(rng, (cy, cx), angle, length / 2, 6 * unit)
    main = np.concatenate([_jagged(rng, (cy, cx), angle + np.pi, length / 2, 6 * unit)[::-1], main])
    half_w = _u(rng, 0.8, 1.2) * unit
    alpha = _stroke(main, half_w, scene.obj.shape)
    for _ in range(int(rng.integers(1, 3))):
        root = main[int(rng.integers(main.shape[0]))]
        side = rng.choice([-1.0, 1.0]) * _u(rng, 0.5, 1.0)
        branch = _jagged(rng, (float(root[0]), float(root[1])), angle + side, length * _u(rng, 0.15, 0.3), 5 * unit)
        alpha = np.maximum(alpha, _stroke(branch, 0.7 * half_w, scene.obj.shape))
    return _rgb((0.05, 0.04, 0.04)), alpha * scene.obj, 0.92


def _defect_spot(rng: np.random.Generator, scene: _Scene, scale: float) -> tuple[FloatImage, FloatImage, float]:
    center = _pick_pixel(rng, _start_region(scene, 0.1))
    alpha = _blob(rng, center, _u(rng, 0.035, 0.085) * scale, scene.obj.shape, 0.25) * scene.obj
    color = np.asarray(scene.stains[int(rng.integers(len(scene.stains)))], dtype=np.float32)
    lum = _luminance(scene.image)
    stain = ((0.8 + 0.4 * lum)[..., None] * color).astype(np.float32)
    return stain, alpha, _u(rng, 0.8, 0.95)


def _defect_missing(rng: np.random.Generator, scene: _Scene, scale: float) -> tuple[FloatImage, FloatImage, float]:
    radius = _u(rng, 0.055, 0.1) * scale
    region = _start_region(scene, 0.1)
    if scene.is_object:  # a chunk broken off the product's border
        depth = ndimage.distance_transform_edt(scene.obj)
        band = region & (depth > 0) & (depth < 0.6 * radius)
        region = band if band.any() else region
    center = _pick_pixel(rng, region)
    alpha = _blob(rng, center, radius, scene.obj.shape, 0.35) * scene.obj
    return scene.backing(rng), alpha, 1.0


# A defect draws (overlay: (H, W, 3) or (3,) colour, coverage alpha (H, W), opacity); its lengths are
# multiples of ``scale`` pixels (the image side for the default defect sizes).
_DefectFn = Callable[[np.random.Generator, _Scene, float], tuple[FloatImage, FloatImage, float]]

_DEFECTS: dict[str, _DefectFn] = {
    "scratch": _defect_scratch,
    "spot": _defect_spot,
    "missing": _defect_missing,
    "crack": _defect_crack,
}
assert set(_DEFECTS) == set(DEFECT_TYPES)


def _apply_defect(
    rng: np.random.Generator, scene: _Scene, defect: str, scale: float, fraction: tuple[float, float]
) -> tuple[FloatImage, NDArray[np.bool_]]:
    """Draw defects until one covers ``fraction`` (low, high) of the image and is clearly visible (deterministic)."""
    best: tuple[float, FloatImage, NDArray[np.bool_]] | None = None
    lo, hi = fraction
    for _ in range(_MAX_ATTEMPTS):
        overlay, alpha, opacity = _DEFECTS[defect](rng, scene, scale)
        mask = alpha >= 0.5
        frac = float(mask.mean())
        if frac == 0.0:
            continue
        # keep the anti-aliased fringe only right next to the mask: nothing changes elsewhere
        alpha = alpha * ndimage.binary_dilation(mask, structure=np.ones((3, 3), dtype=bool))
        image = _mix(scene.image, overlay, opacity * alpha)
        change = float(np.abs(image[mask] - scene.image[mask]).mean())
        if lo <= frac <= hi and change >= _MIN_VISIBILITY:
            return image, mask
        # otherwise remember the attempt closest to the accepted range
        miss = max(math.log(lo / frac), math.log(frac / hi), 0.0) + max(0.0, _MIN_VISIBILITY - change)
        if best is None or miss < best[0]:
            best = (miss, image, mask)
    if best is None:  # pragma: no cover - the product always has pixels
        raise RuntimeError(f"could not place a {defect} defect")
    return best[1], best[2]


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def _check_kind(kind: str) -> None:
    if kind not in _RENDERERS:
        raise ValueError(f"unknown kind {kind!r}; choose from {', '.join(CATEGORY_KINDS)}")


def _cropped(scene: _Scene, height: int, width: int) -> _Scene:
    """The centred ``height`` x ``width`` window of a square scene (the scene itself when it fits exactly)."""
    side = scene.obj.shape[0]
    if (height, width) == (side, side):
        return scene
    top, left = (side - height) // 2, (side - width) // 2
    window = (slice(top, top + height), slice(left, left + width))
    draw_backing = scene.backing
    return _Scene(
        image=np.ascontiguousarray(scene.image[window]),
        obj=np.ascontiguousarray(scene.obj[window]),
        backing=lambda rng: np.ascontiguousarray(draw_backing(rng)[window]),
        stains=scene.stains,
        axis=scene.axis,
        is_object=scene.is_object,
    )


def _defect_scale(height: int, width: int, fraction: tuple[float, float]) -> float:
    """Length unit of the defect shapes so that their areas centre on ``fraction`` of the image.

    Defect areas grow with the square of the unit; drawn with the unit equal to the side of a
    square image they cover about :data:`MIN_DEFECT_FRACTION`-:data:`MAX_DEFECT_FRACTION`
    (geometric centre 1%). For the default range this is the side of a square image exactly.
    """
    default_centre = MIN_DEFECT_FRACTION * MAX_DEFECT_FRACTION
    wanted_centre = fraction[0] * fraction[1]
    if wanted_centre == default_centre:
        return math.sqrt(height * width)
    return math.sqrt(height * width) * (wanted_centre / default_centre) ** 0.25


def _check_fraction(fraction: tuple[float, float]) -> None:
    low, high = fraction
    if not 0.0 < low <= high < 1.0:
        raise ValueError(f"defect_fraction must be (low, high) with 0 < low <= high < 1, got {fraction}")


def make_image(
    kind: str,
    seed: int,
    size: int = 256,
    defect: str | None = None,
    *,
    height: int | None = None,
    defect_fraction: tuple[float, float] = (MIN_DEFECT_FRACTION, MAX_DEFECT_FRACTION),
) -> tuple[NDArray[np.uint8], NDArray[np.bool_]]:
    """One synthetic image of a product kind, good or with one defect.

    The good image depends only on ``(kind, seed, size, height)``; a defective image is that good
    image with the defect drawn into it before illumination and noise, so pixels away from the
    defect are identical. A non-square image is the centred window of the square scene drawn at
    its longer side (``HIGH_RESOLUTION_SHAPE`` with ``SMALL_DEFECT_FRACTION`` makes the
    high-resolution set of small defects).

    Args:
        kind: one of :data:`CATEGORY_KINDS`.
        seed: non-negative integer seed.
        size: width in pixels (at least 32); also the height unless ``height`` is given.
        defect: ``None`` (or ``"good"``) for a good image, or one of :data:`DEFECT_TYPES`.
        height: height in pixels (at least 32); ``None``: square.
        defect_fraction: (low, high) share of the image the defect mask covers; the shapes are
            scaled to it and drawn until one falls in range (the closest of 40 tries otherwise).

    Returns:
        ``(image, mask)``: (height, size, 3) uint8 RGB and (height, size) bool defect mask (all
        False for a good image).

    Raises:
        ValueError: on an unknown kind or defect, a negative seed, a too small size or a
            defect fraction outside (0, 1).
    """
    _check_kind(kind)
    if defect == "good":
        defect = None
    if defect is not None and defect not in _DEFECTS:
        raise ValueError(f"unknown defect {defect!r}; choose from {', '.join(DEFECT_TYPES)}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    width = size
    height = size if height is None else height
    if min(width, height) < 32:
        raise ValueError(f"size must be at least 32, got {width} x {height}")
    _check_fraction(defect_fraction)
    side = max(width, height)
    kind_id = CATEGORY_KINDS.index(kind)
    rng = np.random.default_rng([seed, kind_id, 0])
    scene = _cropped(_RENDERERS[kind](rng, side), height, width)
    # illumination and sensor noise are drawn before the defect, so they do not depend on it
    gain = _u(rng, 0.9, 1.1)
    tint = rng.uniform(0.97, 1.03, 3).astype(np.float32)
    gx, gy = (float(g) for g in rng.uniform(-0.06, 0.06, 2))
    noise = rng.random((height, width, 3), dtype=np.float32)  # uniform sensor noise, std 0.012
    noise -= 0.5
    noise *= np.float32(0.012 * math.sqrt(12.0))
    image = scene.image
    mask = np.zeros((height, width), dtype=bool)
    if defect is not None:
        defect_rng = np.random.default_rng([seed, kind_id, 1, DEFECT_TYPES.index(defect)])
        scale = _defect_scale(height, width, defect_fraction)
        image, mask = _apply_defect(defect_rng, scene, defect, scale, defect_fraction)
    x, y = _coords(side)
    top, left = (side - height) // 2, (side - width) // 2
    light = (gain * (1.0 + gx * x[:, left : left + width] + gy * y[top : top + height])).astype(np.float32)
    out = image * light[..., None]
    out *= tint
    out += noise
    np.clip(out, 0.0, 1.0, out=out)
    out *= 255.0
    out += 0.5  # round half up on non-negative values, then truncate
    return out.astype(np.uint8), mask


def make_category(
    kind: str,
    n_train: int,
    n_test_good: int,
    n_test_bad: int,
    seed: int,
    size: int = 256,
    *,
    height: int | None = None,
    defect_fraction: tuple[float, float] = (MIN_DEFECT_FRACTION, MAX_DEFECT_FRACTION),
) -> SyntheticCategory:
    """A synthetic category: good train images and a test set of good and defective images.

    Defective test images cycle through :data:`DEFECT_TYPES` (from a seeded starting point), so
    every defect type appears once ``n_test_bad >= 4``.

    Args:
        kind: one of :data:`CATEGORY_KINDS`.
        n_train: number of good train images.
        n_test_good: number of good test images.
        n_test_bad: number of defective test images.
        seed: non-negative seed of the whole category.
        size: image width in pixels (and height unless ``height`` is given).
        height: image height in pixels; ``None``: square.
        defect_fraction: (low, high) share of the image a defect covers (see :func:`make_image`).

    Returns:
        The :class:`SyntheticCategory`; test images are the good ones first, then the defective.

    Raises:
        ValueError: on an unknown kind, negative counts or seed.
    """
    _check_kind(kind)
    if min(n_train, n_test_good, n_test_bad) < 0 or seed < 0:
        raise ValueError("counts and seed must be non-negative")
    total = n_train + n_test_good + n_test_bad
    image_seeds = np.random.SeedSequence([seed, CATEGORY_KINDS.index(kind)]).generate_state(max(total, 1))
    seeds = [int(s) for s in image_seeds[:total]]
    offset = int(np.random.default_rng([seed, 99]).integers(len(DEFECT_TYPES)))
    defects = ["good"] * n_test_good + [DEFECT_TYPES[(offset + i) % len(DEFECT_TYPES)] for i in range(n_test_bad)]
    rows = size if height is None else height
    train = np.zeros((n_train, rows, size, 3), dtype=np.uint8)
    for i in range(n_train):
        train[i] = make_image(kind, seeds[i], size, height=height)[0]
    n_test = n_test_good + n_test_bad
    test = np.zeros((n_test, rows, size, 3), dtype=np.uint8)
    masks = np.zeros((n_test, rows, size), dtype=bool)
    for j, name in enumerate(defects):
        test[j], masks[j] = make_image(
            kind,
            seeds[n_train + j],
            size,
            None if name == "good" else name,
            height=height,
            defect_fraction=defect_fraction,
        )
    labels = np.array([0 if d == "good" else 1 for d in defects], dtype=np.int64)
    return SyntheticCategory(
        kind=kind,
        seed=seed,
        train_images=train,
        test_images=test,
        test_labels=labels,
        test_masks=masks,
        test_defects=defects,
    )


def _index_name(i: int, count: int) -> str:
    return str(i).zfill(max(3, len(str(max(count - 1, 0)))))


def write_mvtec_layout(category: SyntheticCategory, root: Path, name: str) -> Path:
    """Write a category as PNG files in exactly the MVTec AD layout.

    Layout (numbering restarts at 000 in every folder)::

        root/name/train/good/000.png
        root/name/test/good/000.png
        root/name/test/<defect>/000.png
        root/name/ground_truth/<defect>/000_mask.png   (L mode, 0 / 255)

    Args:
        category: the category to write.
        root: dataset root (created if needed).
        name: category folder name.

    Returns:
        The category folder ``root / name``.
    """
    base = Path(root) / name
    train_dir = base / "train" / "good"
    train_dir.mkdir(parents=True, exist_ok=True)
    n_train = category.train_images.shape[0]
    for i, img in enumerate(category.train_images):
        Image.fromarray(img).save(train_dir / f"{_index_name(i, n_train)}.png")
    counts: dict[str, int] = {}
    for d in category.test_defects:
        counts[d] = counts.get(d, 0) + 1
    seen: dict[str, int] = {}
    for img, mask, defect in zip(category.test_images, category.test_masks, category.test_defects, strict=True):
        k = seen.get(defect, 0)
        seen[defect] = k + 1
        stem = _index_name(k, counts[defect])
        test_dir = base / "test" / defect
        test_dir.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(test_dir / f"{stem}.png")
        if defect != "good":
            gt_dir = base / "ground_truth" / defect
            gt_dir.mkdir(parents=True, exist_ok=True)
            Image.fromarray(mask.astype(np.uint8) * np.uint8(255)).save(gt_dir / f"{stem}_mask.png")
    return base


def write_dataset(
    root: Path,
    kinds: Sequence[str] = CATEGORY_KINDS,
    n_train: int = 20,
    n_test_good: int = 8,
    n_test_bad: int = 8,
    seed: int = 0,
    size: int = 256,
    *,
    height: int | None = None,
    defect_fraction: tuple[float, float] = (MIN_DEFECT_FRACTION, MAX_DEFECT_FRACTION),
) -> dict[str, Path]:
    """Write several synthetic categories under one root in the MVTec AD layout.

    Args:
        root: dataset root.
        kinds: product kinds to write (each becomes the category of the same name).
        n_train: good train images per category.
        n_test_good: good test images per category.
        n_test_bad: defective test images per category.
        seed: seed of the dataset; each kind gets its own streams.
        size: image width (and height unless ``height`` is given).
        height: image height; ``None``: square.
        defect_fraction: (low, high) share of the image a defect covers.

    Returns:
        Category name -> category folder.
    """
    return {
        kind: write_mvtec_layout(
            make_category(
                kind, n_train, n_test_good, n_test_bad, seed, size, height=height, defect_fraction=defect_fraction
            ),
            root,
            kind,
        )
        for kind in kinds
    }
