"""Procedural indoor rooms and street scenes, drawn as (image, label map) pairs in the real label encodings.

Design goal: a *mask prior* must matter. Colours come from one shared pool (with a weak per-class preference and
noise), surfaces share textures, and images get blur, illumination gradients and pixel noise, so local colour says
little about the class; shape, size and context (ceiling above wall above floor, cars on the road, poles thin and
vertical, signs on poles) say a lot. A small CNN trained briefly then leaves boundary errors and speckle that a
model of mask shapes can fix, while the class stays inferable from shape and context.

Labels use the real encodings: ADE20K raw values (0 = other, true indices of a dozen indoor classes), Cityscapes
official labelIds including void ids (0 unlabeled, 1 ego vehicle, 3 out of roi, 4 static, 5 dynamic).
``diffseg.data.synthetic`` writes them in the datasets' on-disk layouts.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

# Raw ADE20K values (1-based index in the 150 classes) of the indoor classes drawn.
ADE = {
    "other": 0, "wall": 1, "floor": 4, "ceiling": 6, "bed": 8, "windowpane": 9, "cabinet": 11, "door": 15,
    "table": 16, "plant": 18, "curtain": 19, "chair": 20, "painting": 23, "rug": 29, "lamp": 37,
}  # fmt: skip
# Official Cityscapes labelIds drawn.
CS = {
    "unlabeled": 0, "ego vehicle": 1, "out of roi": 3, "static": 4, "dynamic": 5, "road": 7, "sidewalk": 8,
    "building": 11, "wall": 12, "fence": 13, "pole": 17, "traffic light": 19, "traffic sign": 20,
    "vegetation": 21, "terrain": 22, "sky": 23, "person": 24, "car": 26, "truck": 27, "bicycle": 33,
}  # fmt: skip

# One colour pool shared by every class; classes only prefer some entries (weights below), with much overlap.
POOL = np.array(
    [
        [128, 128, 128],  # 0 grey
        [170, 160, 150],  # 1 warm light grey
        [90, 90, 100],  # 2 dark grey
        [150, 110, 80],  # 3 brown
        [200, 190, 170],  # 4 beige
        [100, 130, 90],  # 5 muted green
        [120, 140, 170],  # 6 muted blue
        [180, 120, 110],  # 7 dusty red
        [60, 60, 60],  # 8 near black
        [215, 215, 210],  # 9 off white
    ],
    dtype=np.float32,
)
_PREF: dict[str, tuple[int, ...]] = {
    # ADE20K
    "wall": (1, 4, 9, 0, 6), "floor": (3, 1, 0, 2, 4), "ceiling": (9, 4, 1, 0), "bed": (9, 7, 6, 4, 3),
    "windowpane": (6, 9, 0, 1), "cabinet": (3, 4, 9, 2), "door": (3, 4, 9, 1), "table": (3, 2, 4, 9),
    "plant": (5, 3, 2, 0), "curtain": (7, 6, 4, 9, 1), "chair": (3, 2, 8, 7), "painting": (7, 6, 5, 3, 4, 8),
    "rug": (7, 6, 3, 2), "lamp": (4, 9, 8, 1), "other": tuple(range(10)),
    # Cityscapes
    "road": (0, 2, 1), "sidewalk": (1, 0, 4, 7), "building": (1, 4, 7, 0, 2, 3), "cs_wall": (0, 1, 4),
    "fence": (0, 3, 2), "pole": (0, 2, 8), "traffic light": (8, 2, 0), "traffic sign": (9, 6, 7, 4),
    "vegetation": (5, 2, 3), "terrain": (5, 3, 4), "sky": (9, 6, 4, 1), "person": (8, 7, 6, 2, 3),
    "car": (6, 7, 8, 9, 0, 2), "truck": (9, 0, 6, 7), "bicycle": (8, 2, 0), "void": tuple(range(10)),
}  # fmt: skip


class _Scene:
    """A label map, a colour map and a texture-id map drawn together, back to front (later shapes occlude)."""

    def __init__(self, h: int, w: int, rng: np.random.Generator, fill_label: int, fill_key: str) -> None:
        self.h, self.w, self.rng = h, w, rng
        self.label = Image.new("L", (w, h), fill_label)
        self.color = Image.new("RGB", (w, h), self.pick(fill_key))
        self.tex = Image.new("L", (w, h), 0)
        self._draw = [ImageDraw.Draw(im) for im in (self.label, self.color, self.tex)]

    def pick(self, key: str) -> tuple[int, int, int]:
        """A colour for class ``key``: a preferred pool entry (sometimes any entry) plus jitter."""
        pool = _PREF[key] if self.rng.random() < 0.8 else tuple(range(len(POOL)))
        base = POOL[self.rng.choice(pool)] + self.rng.normal(0, 14, 3)
        return tuple(int(v) for v in np.clip(base, 0, 255))

    def _style(self, key: str, color: tuple[int, int, int] | None, tex: int | None) -> tuple:
        color = color if color is not None else self.pick(key)
        tex = tex if tex is not None else int(self.rng.choice(len(_TEXTURES), p=_TEX_P))
        return color, tex

    def poly(self, pts, label: int, key: str, color=None, tex=None) -> tuple[int, int, int]:
        color, tex = self._style(key, color, tex)
        pts = [(float(x), float(y)) for x, y in pts]
        for d, v in zip(self._draw, (label, color, tex)):
            d.polygon(pts, fill=v)
        return color

    def rect(self, x0, y0, x1, y1, label: int, key: str, color=None, tex=None) -> tuple[int, int, int]:
        return self.poly([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], label, key, color, tex)

    def ellipse(self, x0, y0, x1, y1, label: int, key: str, color=None, tex=None) -> tuple[int, int, int]:
        color, tex = self._style(key, color, tex)
        box = [min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)]
        for d, v in zip(self._draw, (label, color, tex)):
            d.ellipse(box, fill=v)
        return color

    def line(self, x0, y0, x1, y1, width: int, label: int, key: str, color=None) -> tuple[int, int, int]:
        color, _ = self._style(key, color, 0)
        for d, v in zip(self._draw, (label, color, 0)):
            d.line([(x0, y0), (x1, y1)], fill=v, width=max(1, int(width)))
        return color

    def render(self) -> tuple[np.ndarray, np.ndarray]:
        """(H, W, 3) uint8 image with texture, blur, illumination and noise; (H, W) uint8 labels."""
        rng, h, w = self.rng, self.h, self.w
        img = np.asarray(self.color, dtype=np.float32)
        tex_ids = np.asarray(self.tex)
        patterns = _texture_bank(h, w)
        img *= (1.0 - 0.22 * np.choose(tex_ids, patterns))[..., None]
        blurred = Image.fromarray(img.clip(0, 255).astype(np.uint8)).filter(
            ImageFilter.GaussianBlur(radius=float(rng.uniform(0.4, 1.1)))
        )
        img = np.asarray(blurred, dtype=np.float32)
        # Low-frequency illumination: a 3x3 random gain field, bilinearly upsampled.
        gain = Image.fromarray(rng.uniform(0.75, 1.2, (3, 3)).astype(np.float32), mode="F")
        img *= np.asarray(gain.resize((w, h), Image.BILINEAR))[..., None]
        img += rng.normal(0.0, rng.uniform(4.0, 12.0), img.shape).astype(np.float32)
        return img.clip(0, 255).astype(np.uint8), np.asarray(self.label, dtype=np.uint8).copy()


_TEXTURES = ("flat", "h-stripes", "v-stripes", "checker", "grain")
_TEX_P = np.array([0.4, 0.15, 0.15, 0.15, 0.15])
_BANK: dict[tuple[int, int], np.ndarray] = {}


def _texture_bank(h: int, w: int) -> np.ndarray:
    """(len(_TEXTURES), H, W) float32 in [0, 1]; shared by every class (texture is not a class cue)."""
    if (h, w) not in _BANK:
        y, x = np.mgrid[0:h, 0:w]
        grain = np.random.default_rng(12345).random((h, w))
        _BANK[(h, w)] = np.stack(
            [np.zeros((h, w)), (y // 3) % 2, (x // 3) % 2, ((y // 4) + (x // 4)) % 2, grain]
        ).astype(np.float32)
    return _BANK[(h, w)]


# --------------------------------------------------------------------------------------------------------------
# ADE20K: indoor rooms in one-point perspective


def draw_room(h: int, w: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One indoor scene: (H, W, 3) uint8 image, (H, W) uint8 raw ADE20K labels."""
    u = rng.uniform
    s = _Scene(h, w, rng, ADE["wall"], "wall")
    yc, yf = u(0.08, 0.3) * h, u(0.55, 0.75) * h  # ceiling line, floor line of the back wall
    xl, xr = u(0.08, 0.32) * w, u(0.68, 0.92) * w
    # Side walls take their own colour: the same class in different colours.
    s.poly([(0, 0), (xl, yc), (xl, yf), (0, h)], ADE["wall"], "wall")
    s.poly([(w, 0), (xr, yc), (xr, yf), (w, h)], ADE["wall"], "wall")
    s.poly([(0, 0), (w, 0), (xr, yc), (xl, yc)], ADE["ceiling"], "ceiling")
    s.poly([(xl, yf), (xr, yf), (w, h), (0, h)], ADE["floor"], "floor")
    wall_h, wall_w = yf - yc, xr - xl
    # Windows high on the back wall, sometimes with curtains on both sides.
    for _ in range(rng.integers(0, 3)):
        ww, wh = u(0.12, 0.25) * wall_w, u(0.25, 0.45) * wall_h
        x0, y0 = u(xl + 2, xr - ww - 2), yc + u(0.1, 0.3) * wall_h
        s.rect(x0, y0, x0 + ww, y0 + wh, ADE["windowpane"], "windowpane")
        if rng.random() < 0.5:
            cw = max(2.0, 0.25 * ww)
            ccol = s.pick("curtain")
            s.rect(x0 - cw * 0.6, y0 - 2, x0 + cw * 0.4, y0 + wh * 1.2, ADE["curtain"], "curtain", ccol)
            s.rect(
                x0 + ww - cw * 0.4, y0 - 2, x0 + ww + cw * 0.6, y0 + wh * 1.2, ADE["curtain"], "curtain", ccol
            )
    if rng.random() < 0.6:  # door: tall, touching the floor line
        dw, dh = u(0.1, 0.18) * wall_w, u(0.65, 0.9) * wall_h
        x0 = u(xl + 1, xr - dw - 1)
        s.rect(x0, yf - dh, x0 + dw, yf, ADE["door"], "door")
    if rng.random() < 0.6:  # painting: small, mid-wall, framed
        pw, ph = u(0.1, 0.2) * wall_w, u(0.12, 0.25) * wall_h
        x0, y0 = u(xl + 2, xr - pw - 2), yc + u(0.15, 0.4) * wall_h
        s.rect(x0, y0, x0 + pw, y0 + ph, ADE["painting"], "painting", s.pick("chair"))
        s.rect(x0 + 1.5, y0 + 1.5, x0 + pw - 1.5, y0 + ph - 1.5, ADE["painting"], "painting")
    if rng.random() < 0.4:  # cabinet against the back wall
        cw, ch = u(0.15, 0.3) * wall_w, u(0.25, 0.5) * wall_h
        x0 = u(xl, xr - cw)
        s.rect(x0, yf - ch, x0 + cw, yf + 2, ADE["cabinet"], "cabinet")
    floor_h = h - yf
    if rng.random() < 0.5:  # rug: a flat ellipse on the floor
        cx, cy = u(0.3, 0.7) * w, yf + u(0.35, 0.7) * floor_h
        rx, ry = u(0.15, 0.3) * w, u(0.1, 0.2) * floor_h
        s.ellipse(cx - rx, cy - ry, cx + rx, cy + ry, ADE["rug"], "rug")
    if rng.random() < 0.45:  # bed: mattress block with a headboard against a side
        bw, bh = u(0.3, 0.5) * w, u(0.2, 0.35) * h
        x0 = u(0.0, w - bw)
        y1 = yf + u(0.4, 0.9) * floor_h
        s.rect(x0, y1 - bh * 1.4, x0 + bw * 0.12, y1, ADE["bed"], "bed")  # headboard
        s.poly([(x0, y1 - bh * 0.6), (x0 + bw, y1 - bh * 0.45), (x0 + bw, y1), (x0, y1)], ADE["bed"], "bed")
        s.rect(x0 + bw * 0.14, y1 - bh * 0.75, x0 + bw * 0.35, y1 - bh * 0.55, ADE["bed"], "bed")  # pillow
    if rng.random() < 0.6:  # table: thin top and thin legs, chairs around it
        tw, th = u(0.2, 0.35) * w, u(0.12, 0.22) * h
        x0, ytop = u(0.05 * w, 0.95 * w - tw), yf + u(0.1, 0.5) * floor_h - th * 0.3
        col = s.pick("table")
        for _ in range(rng.integers(0, 3)):
            side = rng.choice([-1, 1])
            cx = x0 - 0.12 * w if side < 0 else x0 + tw + 0.02 * w
            cwid, cy = 0.1 * w, ytop + th * u(0.2, 0.5)
            ccol = s.pick("chair")
            s.rect(cx, cy - th * 0.9, cx + cwid * 0.2, cy + th * 0.6, ADE["chair"], "chair", ccol)  # back
            s.rect(cx, cy, cx + cwid, cy + 2.5, ADE["chair"], "chair", ccol)  # seat
            s.line(cx + cwid, cy, cx + cwid, cy + th * 0.6, 1, ADE["chair"], "chair", ccol)
        s.rect(x0, ytop, x0 + tw, ytop + max(2.0, th * 0.15), ADE["table"], "table", col)
        for lx in (x0 + 1, x0 + tw - 2):
            s.line(lx, ytop, lx, ytop + th, 2, ADE["table"], "table", col)
    if rng.random() < 0.5:  # lamp: thin pole, trapezoid shade
        lx, ly = u(0.05, 0.95) * w, yf + u(0.2, 0.6) * floor_h
        lh = u(0.25, 0.45) * h
        col = s.pick("lamp")
        s.line(lx, ly, lx, ly - lh, 1, ADE["lamp"], "lamp", col)
        sw = u(0.04, 0.07) * w
        s.poly([(lx - sw * 0.5, ly - lh), (lx + sw * 0.5, ly - lh), (lx + sw, ly - lh + sw), (lx - sw, ly - lh + sw)],
               ADE["lamp"], "lamp")  # fmt: skip
    if rng.random() < 0.5:  # plant: pot and a cluster of leaf blobs
        px, py = u(0.05, 0.95) * w, yf + u(0.3, 0.9) * floor_h
        pw = u(0.05, 0.09) * w
        s.poly([(px - pw, py - pw * 1.2), (px + pw, py - pw * 1.2), (px + pw * 0.7, py), (px - pw * 0.7, py)],
               ADE["plant"], "plant")  # fmt: skip
        col = s.pick("plant")
        for _ in range(rng.integers(3, 7)):
            r = pw * u(0.6, 1.2)
            cx, cy = px + u(-1.5, 1.5) * pw, py - pw * 1.2 - u(0.3, 2.2) * pw
            s.ellipse(cx - r, cy - r * 1.4, cx + r, cy + r * 0.6, ADE["plant"], "plant", col)
    for _ in range(rng.integers(0, 4)):  # clutter labelled "other"
        cx, cy, r = u(0, w), u(0, h), u(0.02, 0.06) * min(h, w)
        s.ellipse(cx - r, cy - r, cx + r, cy + r * u(0.5, 1.5), ADE["other"], "other")
    return s.render()


# --------------------------------------------------------------------------------------------------------------
# Cityscapes: street scenes seen from a car


def draw_street(h: int, w: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One street scene: (H, W, 3) uint8 image, (H, W) uint8 official Cityscapes labelIds."""
    u = rng.uniform
    s = _Scene(h, w, rng, CS["sky"], "sky")
    yh = u(0.35, 0.5) * h  # horizon
    vx = u(0.35, 0.65) * w  # vanishing point x
    # Buildings: a row of blocks standing on the horizon, tops of varied height, window texture common.
    x = -u(0, 0.1) * w
    while x < w:
        bw = u(0.12, 0.35) * w
        top = u(0.0, 0.8) * yh
        s.rect(x, top, x + bw + 1, yh + 2, CS["building"], "building", tex=int(rng.choice([0, 3, 1, 2])))
        x += bw
    if rng.random() < 0.4:  # a low wall segment at the building line
        x0 = u(0, 0.7) * w
        s.rect(x0, yh - u(0.05, 0.12) * h, x0 + u(0.1, 0.3) * w, yh + 2, CS["wall"], "cs_wall")
    for _ in range(rng.integers(0, 4)):  # trees: crown blobs over a trunk (all vegetation)
        tx, r = u(0, w), u(0.06, 0.14) * h
        col = s.pick("vegetation")
        s.line(tx, yh + 2, tx, yh - r * 1.5, 2, CS["vegetation"], "vegetation", s.pick("vegetation"))
        for _ in range(rng.integers(2, 5)):
            cx, cy = tx + u(-1, 1) * r, yh - r * 1.6 + u(-1, 0.5) * r
            s.ellipse(cx - r, cy - r * 0.8, cx + r, cy + r * 0.8, CS["vegetation"], "vegetation", col)
    # Ground: sidewalks fill below the horizon, the road is a trapezoid towards the vanishing point.
    s.rect(0, yh, w, h, CS["sidewalk"], "sidewalk")
    if rng.random() < 0.5:  # terrain strip between sidewalk and buildings
        s.rect(0, yh, w, yh + u(0.03, 0.07) * h, CS["terrain"], "terrain")
    road_half = u(0.35, 0.6) * w
    s.poly([(vx - 2, yh), (vx + 2, yh), (w / 2 + road_half, h), (w / 2 - road_half, h)], CS["road"], "road")
    if rng.random() < 0.4:  # fence along one side of the road
        side = rng.choice([-1, 1])
        x0 = 0 if side < 0 else w * 0.75
        s.rect(x0, yh - 0.08 * h, x0 + 0.25 * w, yh + 0.06 * h, CS["fence"], "fence", tex=2)

    def ground_y(depth: float) -> float:
        return yh + depth * (h - yh)

    # Poles on the sidewalk edges, with signs and lights on top (thin structures).
    for _ in range(rng.integers(1, 4)):
        d = u(0.1, 0.6)
        gy = ground_y(d)
        edge = vx + (rng.choice([-1, 1])) * (2 + d * (road_half + 0.05 * w))
        ph = (0.3 + 0.6 * d) * h
        s.line(edge, gy, edge, gy - ph, 1 if d < 0.4 else 2, CS["pole"], "pole")
        r = 1.5 + 3 * d
        if rng.random() < 0.6:
            shape = rng.integers(0, 3)
            cx, cy = edge, gy - ph + r
            if shape == 0:
                s.ellipse(cx - r, cy - r, cx + r, cy + r, CS["traffic sign"], "traffic sign")
            elif shape == 1:
                s.poly([(cx - r, cy + r), (cx + r, cy + r), (cx, cy - r)], CS["traffic sign"], "traffic sign")
            else:
                s.rect(cx - r, cy - r, cx + r, cy + r, CS["traffic sign"], "traffic sign")
        elif rng.random() < 0.6:
            s.rect(
                edge - r * 0.5,
                gy - ph,
                edge + r * 0.5,
                gy - ph + 2.5 * r,
                CS["traffic light"],
                "traffic light",
            )
    # Persons and bicycles on the sidewalks.
    for _ in range(rng.integers(0, 4)):
        d = u(0.05, 0.7)
        gy = ground_y(d)
        side = rng.choice([-1, 1])
        px = vx + side * (d * road_half * u(1.05, 1.6) + 3)
        ph = (0.12 + 0.35 * d) * h
        pw = ph * 0.28
        if rng.random() < 0.2:
            s.ellipse(px - ph * 0.4, gy - ph * 0.35, px + ph * 0.4, gy, CS["bicycle"], "bicycle")
        col = s.pick("person")
        s.ellipse(px - pw / 2, gy - ph * 0.85, px + pw / 2, gy - ph * 0.35, CS["person"], "person", col)
        s.ellipse(px - pw / 3, gy - ph, px + pw / 3, gy - ph * 0.82, CS["person"], "person")
        s.line(px - pw / 4, gy - ph * 0.4, px - pw / 3, gy, 1, CS["person"], "person", col)
        s.line(px + pw / 4, gy - ph * 0.4, px + pw / 3, gy, 1, CS["person"], "person", col)
    # Vehicles on the road, far ones first so near ones occlude them.
    for d in sorted(u(0.05, 0.85, rng.integers(0, 4))):
        gy = ground_y(d)
        cw = (0.1 + 0.45 * d) * w
        truck = rng.random() < 0.15
        ch = cw * (0.9 if truck else 0.55)
        cx = vx + u(-1, 1) * d * road_half * 0.7
        lid, key = (CS["truck"], "truck") if truck else (CS["car"], "car")
        col = s.pick(key)
        s.rect(cx - cw / 2, gy - ch * 0.6, cx + cw / 2, gy - ch * 0.1, lid, key, col)
        s.poly([(cx - cw * 0.35, gy - ch * 0.6), (cx - cw * 0.25, gy - ch), (cx + cw * 0.25, gy - ch),
                (cx + cw * 0.35, gy - ch * 0.6)], lid, key)  # fmt: skip
        wr = max(1.0, ch * 0.14)
        for wx in (cx - cw * 0.32, cx + cw * 0.32):
            s.ellipse(wx - wr, gy - ch * 0.2 - wr, wx + wr, gy, lid, key, (30, 30, 30))
    # Void classes: static / dynamic clutter, unlabeled patches, ego vehicle and out-of-roi border.
    for _ in range(rng.integers(0, 3)):
        cx, cy, r = u(0, w), u(yh, h), u(0.02, 0.05) * h
        s.rect(cx - r, cy - r, cx + r, cy + r, CS[rng.choice(["static", "dynamic", "unlabeled"])], "void")
    if rng.random() < 0.5:
        eh = u(0.05, 0.12) * h
        s.ellipse(-0.2 * w, h - eh, 1.2 * w, h + eh * 2, CS["ego vehicle"], "void")
    if rng.random() < 0.5:
        b = int(rng.integers(1, 3))
        col = s.pick("void")
        for box in ((0, 0, w, b - 1), (0, h - b, w, h), (0, 0, b - 1, h), (w - b, 0, w, h)):
            s.rect(*box, CS["out of roi"], "void", col, 0)
    return s.render()
