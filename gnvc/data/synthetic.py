"""Synthetic clips of moving natural textures: the embedded training data that needs no download.

Why synthetic: no machine here can download a data set, yet the VAE, the latent codec and the
prior must learn from *natural* statistics (edges, textures, colour) and *natural* motion (global
camera motion, occlusion, disocclusion). So each clip is a virtual camera moving over a natural
photograph that scikit-image ships (pan + zoom + rotation along a smooth trajectory), with sprites
cut from other photographs moving over it (occluding objects with soft alpha edges), and an
optional global brightness ramp. Everything is drawn from one seed, so a clip is reproducible
bit-for-bit from ``(seed, index)``.

Rendering uses ``torch.nn.functional.grid_sample`` (bilinear) from a source image that is first
downscaled with anti-aliasing to roughly the output scale, so zooms never alias.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

# Photographs that ship inside the scikit-image wheel (no pooch download): backgrounds are the
# large, textured ones; sprites may come from any of them.
BACKGROUND_IMAGES = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "grass",
    "gravel",
    "brick",
    "camera",
    "moon",
)
SPRITE_IMAGES = ("astronaut", "chelsea", "coffee", "rocket", "coins", "camera", "colorwheel", "clock", "page")


@dataclass(frozen=True)
class SyntheticParams:
    """Ranges the generator draws from (all motion is per clip, from the first to the last frame)."""

    sprites: tuple[int, int] = (1, 3)  # number of occluding sprites, inclusive range
    field_of_view: tuple[float, float] = (0.3, 0.7)  # share of the source width the camera sees
    max_pan: float = 0.5  # camera travel over the clip, in output widths
    max_zoom: float = 1.3  # zoom factor range [1/max_zoom, max_zoom] over the clip
    max_rotation_deg: float = 15.0  # camera roll over the clip
    sprite_size: tuple[float, float] = (0.25, 0.55)  # sprite side, share of the output's shorter side
    sprite_speed: float = 0.8  # sprite travel over the clip, in output widths
    brightness: float = 0.15  # |gain change| over the clip
    backgrounds: tuple[str, ...] = BACKGROUND_IMAGES
    sprite_sources: tuple[str, ...] = SPRITE_IMAGES
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> SyntheticParams:
        d = dict(d or {})
        kw: dict[str, Any] = {}
        for name in cls.__dataclass_fields__:
            if name in d and name != "extra":
                v = d.pop(name)
                kw[name] = tuple(v) if isinstance(v, list) else v
        from gnvc.errors import ConfigError

        if d:
            raise ConfigError(f"data.synthetic: unknown key(s) {sorted(d)}; known: {sorted(cls.__dataclass_fields__)}")
        p = cls(**kw)
        unknown = [n for n in (*p.backgrounds, *p.sprite_sources) if n not in _IMAGE_LOADERS]
        if unknown:
            raise ConfigError(
                f"data.synthetic: unknown scikit-image picture(s) {unknown}; known: {sorted(_IMAGE_LOADERS)}"
            )
        return p


def _load(name: str) -> np.ndarray:
    import skimage.data

    img = getattr(skimage.data, name)()
    if img.dtype == bool:
        img = img.astype(np.uint8) * 255
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return np.ascontiguousarray(img[..., :3])


# Every picture the generator may be configured with (all ship in the scikit-image wheel).
_IMAGE_LOADERS = frozenset((*BACKGROUND_IMAGES, *SPRITE_IMAGES, "cat", "text", "logo"))


@lru_cache(maxsize=32)
def natural_image(name: str) -> torch.Tensor:
    """A scikit-image photograph as float (3, H, W) in [0, 1] (cached: loading costs ~50 ms)."""
    arr = _load(name)
    return torch.from_numpy(arr).permute(2, 0, 1).float().div_(255.0)


def _downscale(img: torch.Tensor, factor: float) -> torch.Tensor:
    """Anti-aliased downscale by ``factor`` (> 1 shrinks)."""
    if factor <= 1.0:
        return img
    h, w = img.shape[-2:]
    size = (max(8, round(h / factor)), max(8, round(w / factor)))
    return F.interpolate(img[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0]


def _affine_grid(
    centers: torch.Tensor, scales: torch.Tensor, angles: torch.Tensor, out_hw: tuple[int, int], src_hw: tuple[int, int]
) -> torch.Tensor:
    """Sampling grids (T, H, W, 2): output pixel u maps to source pixel c + s·R(θ)·u (u centred)."""
    h, w = out_hw
    sh, sw = src_hw
    ys = torch.arange(h, dtype=torch.float32) - (h - 1) / 2
    xs = torch.arange(w, dtype=torch.float32) - (w - 1) / 2
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    cos, sin = torch.cos(angles)[:, None, None], torch.sin(angles)[:, None, None]
    s = scales[:, None, None]
    px = centers[:, 0, None, None] + s * (cos * gx - sin * gy)
    py = centers[:, 1, None, None] + s * (sin * gx + cos * gy)
    # grid_sample, align_corners=False: pixel i has normalised coordinate (2i + 1)/n − 1.
    return torch.stack(((2 * px + 1) / sw - 1, (2 * py + 1) / sh - 1), dim=-1)


def _ease(num_frames: int, rng: np.random.Generator) -> torch.Tensor:
    """Progress 0→1 over the clip: linear or smoothstep, so speeds are not all constant."""
    u = torch.linspace(0.0, 1.0, num_frames)
    if rng.random() < 0.5:
        return u
    return u * u * (3 - 2 * u)


def _sprite(rng: np.random.Generator, params: SyntheticParams, side: int) -> torch.Tensor:
    """An RGBA sprite (4, side, side): a patch of a photograph under a soft ellipse or polygon mask."""
    img = natural_image(params.sprite_sources[rng.integers(len(params.sprite_sources))])
    h, w = img.shape[-2:]
    patch = int(min(h, w) * rng.uniform(0.25, 0.6))
    y0, x0 = int(rng.integers(0, h - patch + 1)), int(rng.integers(0, w - patch + 1))
    rgb = img[:, y0 : y0 + patch, x0 : x0 + patch]
    rgb = F.interpolate(rgb[None], size=(side, side), mode="bilinear", antialias=True, align_corners=False)[0]
    c = (torch.arange(side, dtype=torch.float32) - (side - 1) / 2) / (side / 2)
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    soft = 2.0 / side  # about one pixel of soft edge
    if rng.random() < 0.5:
        ax, ay = rng.uniform(0.6, 1.0), rng.uniform(0.6, 1.0)
        dist = torch.sqrt((xx / ax) ** 2 + (yy / ay) ** 2) - 1.0
    else:  # convex polygon: the max of half-plane distances
        k = int(rng.integers(3, 8))
        angles = np.sort(rng.uniform(0, 2 * math.pi, size=k))
        radius = rng.uniform(0.6, 1.0)
        dist = torch.full_like(xx, -1e9)
        for a in angles:
            dist = torch.maximum(dist, xx * math.cos(a) + yy * math.sin(a) - radius * math.cos(math.pi / k))
    alpha = torch.clamp(0.5 - dist / soft, 0.0, 1.0)
    return torch.cat((rgb, alpha[None]), dim=0)


def synthesize_clip(
    seed: int | tuple[int, ...], num_frames: int, height: int, width: int, params: SyntheticParams | None = None
) -> np.ndarray:
    """One clip, uint8 (T, H, W, 3), fully determined by ``seed`` and the arguments."""
    params = params or SyntheticParams()
    rng = np.random.default_rng(seed)
    out_hw = (height, width)

    # --- background and camera ---------------------------------------------------------------
    bg = natural_image(params.backgrounds[rng.integers(len(params.backgrounds))])
    fov = rng.uniform(*params.field_of_view)
    base_scale = fov * bg.shape[-1] / width  # source pixels per output pixel at zoom 1
    # Pre-shrink so the sampling step is ~1 source pixel even at the strongest zoom-out.
    pre = max(1.0, base_scale / params.max_zoom)
    bg = _downscale(bg, pre)
    base_scale = fov * bg.shape[-1] / width  # the same view, in the shrunken image's pixels
    sh, sw = bg.shape[-2:]

    progress = _ease(num_frames, rng)
    zoom0, zoom1 = (params.max_zoom ** rng.uniform(-1, 1) for _ in range(2))
    scales = base_scale * torch.exp(math.log(zoom0) + progress * (math.log(zoom1) - math.log(zoom0)))
    rot = math.radians(params.max_rotation_deg) * rng.uniform(-1, 1)
    angle0 = rng.uniform(-0.1, 0.1)
    angles = angle0 + progress * rot
    # Centre path: stay far enough from the border that the rotated view fits (reflection beyond).
    radius = float(scales.max()) * math.hypot(height, width) / 2
    lo_x, hi_x = min(radius, sw / 2), max(sw - radius, sw / 2)
    lo_y, hi_y = min(radius, sh / 2), max(sh - radius, sh / 2)
    c0 = np.array([rng.uniform(lo_x, hi_x), rng.uniform(lo_y, hi_y)])
    direction = rng.uniform(0, 2 * math.pi)
    travel = params.max_pan * width * base_scale * rng.uniform(0.2, 1.0)
    c1 = c0 + travel * np.array([math.cos(direction), math.sin(direction)])
    c1 = np.clip(c1, [lo_x, lo_y], [hi_x, hi_y])
    centers = torch.from_numpy(c0).float()[None] + progress[:, None] * torch.from_numpy(c1 - c0).float()[None]

    grid = _affine_grid(centers, scales, angles, out_hw, (sh, sw))
    frames = F.grid_sample(
        bg[None].expand(num_frames, -1, -1, -1), grid, mode="bilinear", padding_mode="reflection", align_corners=False
    )

    # --- occluding sprites (painter's order) ---------------------------------------------------
    n_sprites = int(rng.integers(params.sprites[0], params.sprites[1] + 1))
    short = min(height, width)
    for _ in range(n_sprites):
        side = max(6, int(short * rng.uniform(*params.sprite_size)))
        spr = _sprite(rng, params, 2 * side)  # 2× supersampled, sampled at half a pixel per step
        p0 = np.array([rng.uniform(0, width), rng.uniform(0, height)])
        heading = rng.uniform(0, 2 * math.pi)
        p1 = p0 + params.sprite_speed * width * rng.uniform(0.2, 1.0) * np.array([math.cos(heading), math.sin(heading)])
        prog = _ease(num_frames, rng)
        pos = torch.from_numpy(p0).float()[None] + prog[:, None] * torch.from_numpy(p1 - p0).float()[None]
        spin = math.radians(60) * rng.uniform(-1, 1)
        s_angles = spin * prog
        # Map output pixels into sprite pixels: sprite centre at `pos`, inverse rotation, 2 px per px.
        ys = torch.arange(height, dtype=torch.float32)[None, :, None] - pos[:, 1, None, None]
        xs = torch.arange(width, dtype=torch.float32)[None, None, :] - pos[:, 0, None, None]
        cos, sin = torch.cos(-s_angles)[:, None, None], torch.sin(-s_angles)[:, None, None]
        sx = 2.0 * (cos * xs - sin * ys) + (2 * side - 1) / 2
        sy = 2.0 * (sin * xs + cos * ys) + (2 * side - 1) / 2
        g = torch.stack(((2 * sx + 1) / (2 * side) - 1, (2 * sy + 1) / (2 * side) - 1), dim=-1)
        rgba = F.grid_sample(
            spr[None].expand(num_frames, -1, -1, -1), g, mode="bilinear", padding_mode="zeros", align_corners=False
        )
        a = rgba[:, 3:4]
        frames = a * rgba[:, :3] + (1 - a) * frames

    # --- global brightness ramp ----------------------------------------------------------------
    if params.brightness > 0:
        gain = 1.0 + params.brightness * rng.uniform(-1, 1) * torch.linspace(0, 1, num_frames)
        frames = frames * gain[:, None, None, None]

    out = frames.clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()
    return out.numpy()
