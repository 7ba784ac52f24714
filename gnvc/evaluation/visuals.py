"""Pictures for the report: side-by-side frames and spatio-temporal slices.

A spatio-temporal slice stacks one pixel row of every frame (time going down): flicker, temporal
noise and "boiling" textures — which per-frame metrics miss and generative decoders risk —
show up as horizontal streaks, smooth motion as clean diagonal lines.
"""

from __future__ import annotations

import io

import numpy as np

MAX_TILE_WIDTH = 480
CROP = 192
LABEL_HEIGHT = 16


def png_bytes(image: np.ndarray) -> bytes:
    """uint8 (H, W, 3) → PNG bytes (small enough to ship back from a worker)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG", compress_level=3)
    return buf.getvalue()


def png_array(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


def middle_index(num_frames: int) -> int:
    return num_frames // 2


def time_slice(frames: np.ndarray, row: int | None = None) -> np.ndarray:
    """Row ``row`` (default: the middle one) of every frame, stacked: (T, W, 3)."""
    r = frames.shape[1] // 2 if row is None else row
    return np.ascontiguousarray(frames[:, r])


def extract_visuals(frames: np.ndarray) -> dict[str, bytes]:
    """What a job sends back for the report: its middle frame and its time slice, as PNG."""
    return {"frame": png_bytes(frames[middle_index(frames.shape[0])]), "slice": png_bytes(time_slice(frames))}


def _label(image: np.ndarray, text: str) -> np.ndarray:
    from PIL import Image, ImageDraw

    canvas = Image.new("RGB", (image.shape[1], image.shape[0] + LABEL_HEIGHT), (255, 255, 255))
    canvas.paste(Image.fromarray(image), (0, LABEL_HEIGHT))
    ImageDraw.Draw(canvas).text((3, 2), text, fill=(0, 0, 0))
    return np.asarray(canvas)


def _resize_width(image: np.ndarray, width: int) -> np.ndarray:
    from PIL import Image

    if image.shape[1] <= width:
        return image
    h = max(1, round(image.shape[0] * width / image.shape[1]))
    return np.asarray(Image.fromarray(image).resize((width, h), Image.Resampling.LANCZOS))


def _hstack(tiles: list[np.ndarray], gap: int = 4) -> np.ndarray:
    h = max(t.shape[0] for t in tiles)
    out = []
    for i, t in enumerate(tiles):
        pad = np.full((h - t.shape[0], t.shape[1], 3), 255, np.uint8)
        out.append(np.concatenate([t, pad]))
        if i < len(tiles) - 1:
            out.append(np.full((h, gap, 3), 255, np.uint8))
    return np.concatenate(out, axis=1)


def _vstack(tiles: list[np.ndarray], gap: int = 4) -> np.ndarray:
    w = max(t.shape[1] for t in tiles)
    out = []
    for i, t in enumerate(tiles):
        out.append(np.concatenate([t, np.full((t.shape[0], w - t.shape[1], 3), 255, np.uint8)], axis=1))
        if i < len(tiles) - 1:
            out.append(np.full((gap, w, 3), 255, np.uint8))
    return np.concatenate(out)


def side_by_side(frames: list[tuple[str, np.ndarray]]) -> np.ndarray:
    """Top row: whole frames (downscaled to ≤ 480 px wide); bottom row: native-resolution centre crops.

    Frames small enough to be shown whole at 1:1 get no crop row (it would repeat them).
    """
    full = [_label(_resize_width(f, MAX_TILE_WIDTH), name) for name, f in frames]
    if all(f.shape[1] <= MAX_TILE_WIDTH and f.shape[0] <= 2 * CROP for _, f in frames):
        return _hstack(full)
    crops = []
    for name, f in frames:
        h, w = f.shape[:2]
        ch, cw = min(CROP, h), min(CROP, w)
        y0, x0 = (h - ch) // 2, (w - cw) // 2
        crops.append(_label(f[y0 : y0 + ch, x0 : x0 + cw], f"{name} (crop 1:1)"))
    return _vstack([_hstack(full), _hstack(crops)])


def slices_figure(slices: list[tuple[str, np.ndarray]], min_height: int = 96) -> np.ndarray:
    """Time slices side by side; short clips are stretched in time (nearest) so frames stay visible."""
    tiles = []
    for name, s in slices:
        rep = max(1, -(-min_height // s.shape[0]))
        tiles.append(_label(_resize_width(np.repeat(s, rep, axis=0), MAX_TILE_WIDTH), name))
    return _hstack(tiles)
