"""Shapes rendering: draw a ``Scene`` as an RGB image.

Kept apart from scene sampling because rendering takes no draws from the item's generator: an
image is a pure function of its scene and the world's ``image_size``, ``supersample`` and
``background_noise`` (noise backgrounds use the scene's own ``noise_seed``). Object masks are
drawn ``supersample`` times larger and box-downsampled, which anti-aliases their edges.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from ituning.data.shapes_scene import Background, Scene, WorldConfig


def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]] | None:
    if shape == "square":
        h = 0.78 * r
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if shape == "triangle":
        R = 1.08 * r
        dy = 0.25 * R  # centre the bounding box, not the centroid
        return [
            (cx + R * math.cos(a), cy + dy + R * math.sin(a))
            for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)
        ]
    if shape == "diamond":
        return [(cx, cy - 1.08 * r), (cx + 0.72 * r, cy), (cx, cy + 1.08 * r), (cx - 0.72 * r, cy)]
    if shape == "cross":
        a, w = 1.0 * r, 0.34 * r
        return [
            (cx - w, cy - a), (cx + w, cy - a), (cx + w, cy - w), (cx + a, cy - w),
            (cx + a, cy + w), (cx + w, cy + w), (cx + w, cy + a), (cx - w, cy + a),
            (cx - w, cy + w), (cx - a, cy + w), (cx - a, cy - w), (cx - w, cy - w),
        ]  # fmt: skip
    if shape == "star":
        pts = []
        for k in range(10):
            rad = 1.1 * r if k % 2 == 0 else 0.45 * r
            a = -math.pi / 2 + k * math.pi / 5
            pts.append((cx + rad * math.cos(a), cy + 0.06 * r + rad * math.sin(a)))
        return pts
    if shape == "heart":
        s = 1.05 * r / 16.5
        pts = []
        for k in range(48):
            t = 2 * math.pi * k / 48
            hx = 16 * math.sin(t) ** 3
            hy = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
            pts.append((cx + s * hx, cy - s * (hy + 2.5)))
        return pts
    return None  # circle


def _background(bg: Background, size: int, noise_std: float) -> np.ndarray:
    c1 = np.array(bg.c1, dtype=np.float32)
    if bg.kind == "gradient":
        t = np.linspace(0.0, 1.0, size, dtype=np.float32)
        t = t[:, None] if bg.vertical else t[None, :]
        img = c1 + (np.array(bg.c2, dtype=np.float32) - c1) * t[..., None]
        img = np.broadcast_to(img, (size, size, 3)).copy()
    else:
        img = np.broadcast_to(c1, (size, size, 3)).copy()
    if bg.kind == "noise" and noise_std > 0:
        noise = np.random.default_rng(bg.noise_seed).normal(0.0, noise_std, (size, size, 1))
        img += noise.astype(np.float32)
    return img


def render(scene: Scene, world: WorldConfig) -> Image.Image:
    """Draw a scene as an RGB image (anti-aliased by supersampling the object masks)."""
    size, ss = world.image_size, world.supersample
    img = _background(scene.background, size, world.background_noise)
    for obj in scene.objects:
        mask = Image.new("L", (size * ss, size * ss), 0)
        draw = ImageDraw.Draw(mask)
        cx, cy, r = obj.x * ss, obj.y * ss, obj.radius * ss
        poly = _polygon(obj.shape, cx, cy, r)
        if poly is None:
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
        else:
            draw.polygon(poly, fill=255)
        if ss > 1:
            mask = mask.resize((size, size), Image.Resampling.BOX)
        alpha = np.asarray(mask, dtype=np.float32)[..., None] / 255.0
        img = img * (1.0 - alpha) + np.array(obj.rgb, dtype=np.float32) * alpha
    return Image.fromarray(np.clip(np.rint(img), 0, 255).astype(np.uint8), "RGB")
