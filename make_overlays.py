"""Overlay art for filters.py, drawn by our own code: sunglasses, a moustache and a top hat.

    python make_overlays.py        # writes images/sunglasses.png, images/moustache.png, images/hat.png

Every overlay is drawn in the same canonical face frame: the origin midway between the two eye
centres, x to the right of the image, y down, one unit = the distance between the eye centres.
`CANONICAL_FACE` holds where the anchoring keypoints sit in that frame (the training set's mean
face), so each overlay knows its anchors, the overlay pixels its keypoints should land on, and
filters.py places it by the similarity transform that takes those anchors to a face's keypoints.

Shapes are rasterised at SUPERSAMPLE x the final size and averaged down, which anti-aliases every
edge (alpha included); colours are composited with premultiplied alpha so edges have no dark fringe.
filters.py draws the art at run time with `draw_overlay`; the PNGs are for looking at and for the
course's part of Notebook 4.
"""

import argparse
import os
import sys
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from facial_keypoints import media, outputs

HERE = os.path.dirname(os.path.abspath(__file__))
IMAGES_DIR = os.path.join(HERE, "images")
SUPERSAMPLE = 4

# Keypoints in the canonical face frame: the mean of the 3462 training faces after aligning their eye
# centres to (-0.5, 0) and (0.5, 0), made left/right symmetric (iBUG 300-W indices, 0-based).
CANONICAL_FACE = {
    17: (-0.905, -0.264), 26: (0.905, -0.264),   # outer brow ends
    27: (0.0, 0.016),                            # top of the nose bridge
    31: (-0.190, 0.726), 35: (0.190, 0.726),     # nostril wings
    33: (0.0, 0.776),                            # bottom of the nose
    36: (-0.687, -0.009), 39: (-0.305, 0.009),   # left eye (image left): outer, inner corner
    42: (0.305, 0.009), 45: (0.687, -0.009),     # right eye: inner, outer corner
    48: (-0.406, 1.119), 54: (0.406, 1.119),     # mouth corners
    51: (0.0, 0.997),                            # top of the upper lip
}


@dataclass(frozen=True)
class Overlay:
    name: str
    rgba: np.ndarray      # (H, W, 4) uint8, RGB + straight (not premultiplied) alpha
    indices: tuple        # keypoint indices that anchor it
    anchors: np.ndarray   # (len(indices), 2) where those keypoints belong, in overlay pixels


class Canvas:
    """An RGBA drawing surface addressed in canonical face units.

    The canvas covers x in [left, right] and y in [top, bottom] at `unit` pixels per unit; pixel i
    covers [i - 0.5, i + 0.5]. Shapes are filled into supersampled masks and painted 'over' what is
    already there.
    """

    def __init__(self, unit, left, top, right, bottom):
        self.unit, self.left, self.top = unit, left, top
        self.width, self.height = round((right - left) * unit), round((bottom - top) * unit)
        shape = (self.height * SUPERSAMPLE, self.width * SUPERSAMPLE)
        self.color = np.zeros(shape + (3,), np.float32)  # premultiplied by alpha
        self.alpha = np.zeros(shape, np.float32)

    def pixels(self, points):
        """Canonical points -> final overlay pixel coordinates."""
        return (np.asarray(points, np.float64) - [self.left, self.top]) * self.unit - 0.5

    def grid(self):
        """Canonical x and y of every supersampled pixel centre, for gradients and textures."""
        h, w = self.alpha.shape
        xs = ((np.arange(w) + 0.5) / SUPERSAMPLE) / self.unit + self.left
        ys = ((np.arange(h) + 0.5) / SUPERSAMPLE) / self.unit + self.top
        return np.meshgrid(xs.astype(np.float32), ys.astype(np.float32))

    def mask(self):
        return np.zeros(self.alpha.shape, np.uint8)

    def _hires(self, points):
        # final pixel p -> supersampled pixel (p + 0.5) * S - 0.5, in 1/16 px fixed point for cv2
        hires = (self.pixels(points) + 0.5) * SUPERSAMPLE - 0.5
        return np.round(hires * 16).astype(np.int32)

    def polygon(self, points, mask=None):
        mask = self.mask() if mask is None else mask
        cv2.fillPoly(mask, [self._hires(points)], 255, cv2.LINE_AA, shift=4)
        return mask

    def polyline(self, points, thickness, mask=None, closed=False):
        mask = self.mask() if mask is None else mask
        width = max(1, round(thickness * self.unit * SUPERSAMPLE))
        cv2.polylines(mask, [self._hires(points)], closed, 255, width, cv2.LINE_AA, shift=4)
        return mask

    def paint(self, mask, color, opacity=1.0):
        """Composite `color` (an RGB triple or an (h, w, 3) field, 0..255) through a mask."""
        a = (mask.astype(np.float32) / 255 * opacity)[..., None]
        self.color = np.asarray(color, np.float32) * a + self.color * (1 - a)
        self.alpha = a[..., 0] + self.alpha * (1 - a[..., 0])

    def rgba(self):
        size = (self.width, self.height)
        color = cv2.resize(self.color, size, interpolation=cv2.INTER_AREA)
        alpha = cv2.resize(self.alpha, size, interpolation=cv2.INTER_AREA)
        straight = np.where(alpha[..., None] > 1e-4, color / np.maximum(alpha[..., None], 1e-4), 0)
        alpha8 = np.round(np.clip(alpha, 0, 1) * 255)
        straight[alpha8 == 0] = 0  # invisible pixels carry no colour
        return np.dstack([np.clip(np.round(straight), 0, 255), alpha8]).astype(np.uint8)

    def overlay(self, name, indices):
        anchors = self.pixels([CANONICAL_FACE[i] for i in indices])
        return Overlay(name, self.rgba(), tuple(indices), anchors)


def smooth_closed(points, samples=12):
    """A closed Catmull-Rom spline through the points, as a dense polygon."""
    p = np.asarray(points, np.float64)
    p0, p1, p2, p3 = np.roll(p, 1, 0), p, np.roll(p, -1, 0), np.roll(p, -2, 0)
    t = np.linspace(0, 1, samples, endpoint=False)[:, None, None]
    curve = 0.5 * (2 * p1 + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t ** 2
                   + (-p0 + 3 * p1 - 3 * p2 + p3) * t ** 3)
    return curve.transpose(1, 0, 2).reshape(-1, 2)


def lens_outline(cx, cy, half_w, half_h, side, n=96):
    """A wayfarer lens: squarish top, rounder bottom, outer top corner lifted a little."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    c, s = np.cos(t), np.sin(t)
    power = np.where(s < 0, 0.45, 0.75)  # exponent 2/n of a superellipse: top n~4.4, bottom n~2.7
    x = np.sign(c) * np.abs(c) ** power
    y = np.sign(s) * np.abs(s) ** power
    lift = 0.12 * np.clip(x * side, 0, None) ** 2 * (y < 0.3)
    return np.stack([cx + half_w * x, cy + half_h * y - lift * half_h * 2], 1)


def draw_sunglasses(unit=200):
    canvas = Canvas(unit, -1.16, -0.42, 1.16, 0.40)
    xs, ys = canvas.grid()
    frame = canvas.mask()
    lenses = []
    for side in (-1, 1):
        outer = lens_outline(0.5 * side, 0.02, 0.40, 0.30, side)
        inner = lens_outline(0.5 * side, 0.025, 0.345, 0.245, side)
        canvas.polygon(outer, frame)
        lenses.append(canvas.polygon(inner))
        # temple arm, seen from the front: a short stub going back from the outer top corner
        canvas.polyline([(0.86 * side, -0.13), (1.12 * side, -0.10)], 0.07, frame)
    # bridge: an arch between the lenses
    bridge = [(0.09 * side, -0.12 - 0.05 * np.cos(np.pi * side / 2)) for side in np.linspace(-1, 1, 9)]
    canvas.polyline(bridge, 0.06, frame)
    lens = np.maximum(*lenses)
    frame = cv2.subtract(frame, lens)
    canvas.paint(frame, (22, 22, 28))
    # lens: dark smoky blue-grey, lighter towards the bottom, slightly see-through
    shade = np.clip((ys + 0.25) / 0.55, 0, 1)[..., None]
    canvas.paint(lens, (1 - shade) * np.float32([18, 22, 34]) + shade * np.float32([70, 78, 96]), 0.9)
    # a soft diagonal highlight on each lens
    for side in (-1, 1):
        u = (xs - 0.5 * side) + 0.6 * (ys + 0.05)
        streak = np.exp(-((u + 0.12) / 0.05) ** 2) + 0.6 * np.exp(-((u + 0.01) / 0.025) ** 2)
        glint = (np.clip(streak, 0, 1) * lens / 255 * 255 * (ys < 0.05)).astype(np.uint8)
        canvas.paint(glint, (255, 255, 255), 0.28)
    return canvas.overlay("sunglasses", (36, 39, 42, 45))


def draw_moustache(unit=200, seed=5):
    canvas = Canvas(unit, -0.74, 0.70, 0.74, 1.08)
    # one half of a handlebar moustache, centre -> curled tip -> back along the lower edge
    half = [(0.0, 0.815), (0.07, 0.785), (0.18, 0.775), (0.31, 0.80), (0.43, 0.855), (0.53, 0.885),
            (0.60, 0.870), (0.645, 0.83), (0.650, 0.785), (0.625, 0.750), (0.585, 0.742), (0.560, 0.760),
            (0.590, 0.772), (0.612, 0.792), (0.612, 0.835), (0.585, 0.90), (0.53, 0.950), (0.43, 0.990),
            (0.30, 1.000), (0.17, 0.980), (0.06, 0.950), (0.0, 0.940)]
    outline = np.array(half)
    mirrored = outline[::-1] * [-1, 1]
    shape = canvas.polygon(smooth_closed(np.vstack([outline[1:-1], mirrored[1:-1]]), 10))
    xs, ys = canvas.grid()
    # hair: base colour darkening towards the lower edge, combed outward in fine strands
    base = np.float32([74, 48, 30]) * (1.15 - 0.45 * np.clip((ys - 0.8) / 0.2, 0, 1))[..., None]
    canvas.paint(shape, base)
    rng = np.random.default_rng(seed)
    for _ in range(260):
        x0 = rng.uniform(-0.05, 0.6)
        y0 = rng.uniform(0.82, 0.98)
        side = rng.choice([-1, 1])
        length = rng.uniform(0.06, 0.14)
        angle = 0.25 + 0.9 * x0 + rng.normal(0, 0.12)  # strands fan out and down towards the tips
        p0 = (side * x0, y0)
        p1 = (side * (x0 + length * np.cos(angle)), y0 + length * np.sin(angle) * 0.5)
        strand = cv2.bitwise_and(canvas.polyline([p0, p1], 0.006), shape)
        canvas.paint(strand, (35, 22, 14) if rng.random() < 0.6 else (120, 84, 56), 0.55)
    return canvas.overlay("moustache", (31, 33, 35, 48, 51, 54))


def arc(cx, cy, half_w, half_h, start, stop, n=60):
    """Points on an ellipse from angle `start` to `stop` (radians; y down, so pi/2 is the bottom)."""
    t = np.linspace(start, stop, n)
    return np.stack([cx + half_w * np.cos(t), cy + half_h * np.sin(t)], 1)


def draw_hat(unit=160):
    canvas = Canvas(unit, -1.62, -2.80, 1.62, -0.76)
    xs, ys = canvas.grid()
    brim_y, top_y, base_w, top_w = -1.0, -2.6, 1.02, 1.10
    # felt lit from the upper left: a soft vertical sheen on the left of the crown
    light = (0.6 + 0.9 * np.exp(-((xs + 0.45) / 0.33) ** 2))[..., None]
    # brim, seen from a little below: a flat ellipse whose sides curl up
    brim = arc(0, brim_y, 1.55, 0.17, 0, 2 * np.pi, 120)
    brim[:, 1] -= 0.10 * np.abs(np.cos(np.linspace(0, 2 * np.pi, 120))) ** 4
    canvas.paint(canvas.polygon(brim), np.float32([26, 26, 32]) * (0.8 + 0.3 * light))
    canvas.paint(canvas.polyline(brim[:61], 0.025), (75, 75, 88), 0.8)
    # crown: slightly flaring, its base and top following the brim's curvature
    crown = np.vstack([arc(0, brim_y, base_w, 0.10, 0, np.pi), arc(0, top_y, top_w, 0.08, np.pi, 2 * np.pi)])
    canvas.paint(canvas.polygon(crown), np.float32([30, 30, 37]) * light)
    # band: deep red, a thin light line along its top
    band = np.vstack([arc(0, brim_y - 0.03, base_w + 0.005, 0.10, 0, np.pi),
                      arc(0, brim_y - 0.36, base_w + 0.02, 0.10, np.pi, 0)])
    canvas.paint(canvas.polygon(band), np.float32([150, 20, 34]) * (0.55 + 0.35 * light))
    canvas.paint(canvas.polyline(arc(0, brim_y - 0.35, base_w + 0.02, 0.10, 0.15, np.pi - 0.15), 0.018),
                 (225, 110, 120), 0.6)
    return canvas.overlay("hat", (17, 26, 36, 45))


DRAWINGS = {"sunglasses": draw_sunglasses, "moustache": draw_moustache, "hat": draw_hat}


@lru_cache(maxsize=None)
def draw_overlay(name):
    """The named overlay (drawn once per process)."""
    if name not in DRAWINGS:
        raise ValueError(f"unknown overlay {name!r}; choose from {', '.join(DRAWINGS)}")
    return DRAWINGS[name]()


def save_overlay(overlay, folder=IMAGES_DIR):
    """folder/<name>.png, written whole (outputs.write_image): a failed write leaves the old PNG."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, overlay.name + ".png")
    outputs.write_image(path, cv2.cvtColor(overlay.rgba, cv2.COLOR_RGBA2BGRA))
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=IMAGES_DIR, help="folder for the PNGs (default: images/)")
    args = parser.parse_args(argv)
    for name in DRAWINGS:
        overlay = draw_overlay(name)
        try:
            path = save_overlay(overlay, args.out)
        except (media.DataError, OSError) as e:  # a full disk, a folder that cannot be made
            sys.exit(f"make_overlays.py: {e}")
        anchors = ", ".join(f"{i}@({x:.0f},{y:.0f})"
                            for i, (x, y) in zip(overlay.indices, overlay.anchors, strict=True))
        height, width = overlay.rgba.shape[:2]
        print(f"{os.path.relpath(path)}: {width}x{height} RGBA, anchors {anchors}")


if __name__ == "__main__":
    main()
