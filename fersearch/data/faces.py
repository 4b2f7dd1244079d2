"""Drawing synthetic faces: a batch of 48x48 faces rendered from per-face parameters (synth.py).

Vectorised numpy over the whole batch (no per-pixel Python loops): every face is drawn on a
shared pixel grid after its inverse pose transform, with anti-aliased shapes from signed
distances; features (nose, eyes and brows, mouth) are gathered from a small window around
each face's feature and scattered back, so their cost does not grow with the image.
"""

from __future__ import annotations

import numpy as np

from .schema import SIZE


def _soft(d: np.ndarray, width: float = 0.6) -> np.ndarray:
    """Anti-aliased coverage (0..1) of a shape from its signed distance (negative inside).
    A linear ramp rather than a sigmoid: same look, a fraction of the cost."""
    out = d * np.float32(-1.0 / (2 * width))
    out += np.float32(0.5)
    np.maximum(out, 0, out=out)
    return np.minimum(out, 1, out=out)


def _ellipse_d(u, v, x0, y0, a, b):
    """Approximate signed pixel distance to an axis-aligned ellipse."""
    r = np.sqrt(((u - x0) / a) ** 2 + ((v - y0) / b) ** 2)
    return (r - 1.0) * np.minimum(a, b)


def _segment_d(u, v, x0, y0, x1, y1, half_thick):
    """Signed distance to a thick line segment (a brow, a wrinkle)."""
    dx, dy = x1 - x0, y1 - y0
    t = np.clip(((u - x0) * dx + (v - y0) * dy) / (dx * dx + dy * dy + 1e-9), 0, 1)
    return np.hypot(u - x0 - t * dx, v - y0 - t * dy) - half_thick


def _mix(img, value, alpha):
    img *= 1 - alpha
    img += alpha * value
    return img


def _to_face(c, x, y):
    """Image pixel centres -> face-frame coordinates (u right, v down, in unscaled face pixels)."""
    dx, dy = x - c["cx"], y - c["cy"]
    return (c["cos"] * dx + c["sin"] * dy) / c["scale"], (-c["sin"] * dx + c["cos"] * dy) / c["scale"]


def _window(c, u0, v0, half_w: int, half_h: int):
    """Face-frame coordinates and flat pixel indices of a (2*half_h, 2*half_w) window around face point (u0, v0).

    Eyes, brows, nose and mouth are drawn on a gathered patch and scattered back: the same
    pixels as drawing on the whole image (the ramps in _soft have compact support) at a
    fraction of the cost. Windows are sized for the largest scale, rotation and expression;
    indices clipped at the image border repeat a pixel, which then gets the same value twice."""
    x = c["cx"] + c["scale"] * (c["cos"] * u0 - c["sin"] * v0)
    y = c["cy"] + c["scale"] * (c["sin"] * u0 + c["cos"] * v0)
    xi = np.clip(np.floor(x).astype(np.int32) - half_w + np.arange(2 * half_w), 0, SIZE - 1)
    yi = np.clip(np.floor(y).astype(np.int32) - half_h + np.arange(2 * half_h)[:, None], 0, SIZE - 1)
    u, v = _to_face(c, xi.astype(np.float32) + 0.5, yi.astype(np.float32) + 0.5)
    return u, v, c["batch"] * (SIZE * SIZE) + yi * SIZE + xi


def draw_faces(p: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Render a batch of faces from their parameters: float32 (B, 48, 48) in 0..1."""
    b = len(p["cx"])
    # float32 throughout: half the memory traffic of float64, and chunks small enough to stay in cache
    c: dict[str, np.ndarray] = {k: v.astype(np.float32)[:, None, None] for k, v in p.items()}
    c["cos"], c["sin"], c["batch"] = np.cos(c["rot"]), np.sin(c["rot"]), np.arange(b)[:, None, None]
    ys, xs = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) + 0.5
    u, v = _to_face(c, xs[None], ys[None])

    img = np.broadcast_to(c["bg"] + c["bg_grad"] * (xs[None] - 24) / 24, (b, SIZE, SIZE)).astype(np.float32)
    # hair: a larger oval behind the head, kept above the hairline (and down the sides for some)
    hair = _soft(_ellipse_d(u, v, 0, -2, c["face_w"] + 3, c["face_h"] + 3))
    hair *= np.where(c["hair_side"], _soft(v - 6, 1.5), _soft(v - c["hairline"] - 4, 1.0))
    _mix(img, c["hair"], hair)
    face = _soft(_ellipse_d(u, v, 0, 0, c["face_w"], c["face_h"]), 0.8)
    skin = c["skin"] * (1 - 0.10 * (u / c["face_w"]) ** 2)  # faces are darker towards the sides
    _mix(img, skin, face)
    fringe = face * _soft(v - c["hairline"], 1.2)
    _mix(img, c["hair"], fringe)
    flat = img.reshape(-1)  # a view: features are gathered from and scattered back into it
    _draw_nose(flat, c)
    _draw_eye_and_brow(flat, c, -1.0)
    _draw_eye_and_brow(flat, c, 1.0)
    _draw_mouth(flat, c)

    _draw_occlusion(img, c, u, v, np.flatnonzero(p["occlude"]))

    # lighting, contrast, gamma, blur, noise
    img *= 1 + c["light_x"] * (xs[None] - 24) / 24 + c["light_y"] * (ys[None] - 24) / 24
    img = (img - 0.5) * c["contrast"] + 0.5
    img = np.clip(img, 0, 1) ** c["gamma"]
    img = _blur(img, p["blur"])
    img += rng.normal(0, 1, img.shape).astype(np.float32) * c["noise"]
    return np.clip(img, 0, 1)


def _draw_occlusion(img, c, u, v, which: np.ndarray) -> None:
    """A flat patch (a hand, an object, a watermark) over a few faces; computed for those faces only."""
    o = {k: c[k][which] for k in ("occ_x", "occ_y", "occ_w", "occ_h", "occ_val")}
    u, v = u[which], v[which]
    patch = img[which]
    box = np.maximum(np.abs(u - o["occ_x"]) - o["occ_w"], np.abs(v - o["occ_y"]) - o["occ_h"])
    img[which] = _mix(patch, o["occ_val"], _soft(box, 0.8))


def _draw_nose(flat, c) -> None:
    """Shadow down one side, two nostrils; disgust wrinkles across the bridge; anger's frown lines."""
    u, v, idx = _window(c, 0.0, (c["eye_y"] + c["nose_y"]) / 2 - 1.5, 7, 13)
    img = flat[idx]
    _mix(img, c["skin"] * 0.7, 0.6 * _soft(_segment_d(u, v, 1.5, c["eye_y"] + 2, 2.2, c["nose_y"], 0.5), 0.7))
    for side in (-1.6, 1.6):
        _mix(img, c["skin"] * 0.45, _soft(_ellipse_d(u, v, side, c["nose_y"] + 0.8, 1.0, 0.7), 0.5))
    for k in (0.0, 1.3):
        wr = _soft(_segment_d(u, v, -2.2, c["eye_y"] + 0.5 + k, 2.2, c["eye_y"] + 0.5 + k, 0.35), 0.5)
        _mix(img, c["skin"] * 0.6, c["wrinkle"] * wr)
    frown = _soft(np.minimum(_segment_d(u, v, -0.8, c["eye_y"] - 4, -0.6, c["eye_y"] - 1.5, 0.3),
                             _segment_d(u, v, 0.8, c["eye_y"] - 4, 0.6, c["eye_y"] - 1.5, 0.3)), 0.5)
    _mix(img, c["skin"] * 0.6, c["frown"] * frown)
    flat[idx] = img


def _draw_eye_and_brow(flat, c, side: float) -> None:
    ex = side * c["eye_dx"]
    u, v, idx = _window(c, ex, c["eye_y"] - 5, 12, 14)
    img = flat[idx]
    # eye: sclera ellipse whose height is the openness, iris inside, dark upper lid
    eh = 1.5 * c["eye_open"]
    d_eye = _ellipse_d(u, v, ex, c["eye_y"], c["eye_w"], eh)
    eye = _soft(d_eye, 0.5)
    _mix(img, 0.55 + 0.35 * c["skin"], eye)
    _mix(img, 0.08, eye * _soft(_ellipse_d(u, v, ex, c["eye_y"], 1.4, 1.4), 0.5))
    lid = _soft(np.abs(d_eye) - 0.5, 0.4) * _soft(v - c["eye_y"], 0.8)
    _mix(img, 0.12, 0.8 * lid)
    socket = _soft(_ellipse_d(u, v, ex, c["eye_y"] - 1, c["eye_w"] + 1.5, 2.8), 1.5)
    _mix(img, c["skin"] * 0.75, 0.5 * socket * (1 - eye))
    # brow: a thick segment; tilt > 0 lowers the inner end (anger), < 0 raises it (sadness, fear)
    by = c["eye_y"] - c["brow_gap"] - c["brow_raise"]
    inner_x, outer_x = ex - side * c["brow_w"] * 0.9, ex + side * c["brow_w"]
    brow = _soft(_segment_d(u, v, inner_x, by + c["brow_tilt"] / 2, outer_x, by - c["brow_tilt"] / 2, 1.1), 0.5)
    _mix(img, np.minimum(c["hair"], c["skin"] * 0.5), 0.9 * brow)
    flat[idx] = img


def _draw_mouth(flat, c) -> None:
    """A curved line whose corners rise with `mouth_curve`, opening into a dark cavity (teeth when smiling)."""
    u, v, idx = _window(c, 0.0, c["mouth_y"] + 0.75, 17, 13)
    img = flat[idx]
    half_w = c["mouth_w"] * c["mouth_width"]
    t = np.clip(u / half_w, -1, 1)
    centre = c["mouth_y"] + c["mouth_curve"] * (1 - t * t) * 0.5 - c["mouth_curve"] * 0.25
    centre = centre - c["mouth_asym"] * np.clip(t, 0, 1) * 0.6
    opening = 0.6 * c["mouth_open"] * np.sqrt(np.clip(1 - t * t, 0, 1))
    d_mouth = np.maximum(np.abs(v - centre - opening * 0.3) - (0.6 + opening), np.abs(u) - half_w)
    mouth = _soft(d_mouth, 0.5)
    _mix(img, c["skin"] * 0.25, mouth)
    teeth = mouth * _soft(np.abs(v - centre + opening * 0.35) - 0.45 * opening, 0.4) * (c["mouth_open"] > 0.8)
    _mix(img, 0.85, 0.7 * teeth * (c["mouth_curve"] > 1.0))
    _mix(img, c["skin"] * 0.7, 0.5 * _soft(np.abs(v - centre - opening - 1.8) - 0.6, 0.6)
         * _soft(np.abs(u) - half_w * 0.6, 0.8))  # lower-lip shadow
    flat[idx] = img


def _blur(img: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
    """Gaussian blur with a per-image sigma: one batched filter call per distinct sigma."""
    from scipy.ndimage import gaussian_filter

    out = img.copy()
    for s in np.unique(sigmas):
        if s > 0:
            m = sigmas == s
            out[m] = gaussian_filter(img[m], sigma=(0, s, s), mode="nearest")
    return out
