"""Synthetic FER-format faces: the embedded default data set.

FER2013 cannot be downloaded by the tool, so fersearch draws its own 48x48
grayscale faces. Everything is vectorised numpy over a batch of faces (no
per-pixel Python loops): each face is a set of per-image parameters, drawn on
a shared pixel grid after an inverse pose transform.

- identity: face shape, skin tone, hair, eye spacing/height, mouth position
- pose: shift, small rotation and scale; lighting gradient, contrast
- nuisance: background, blur, pixel noise, occlusion patches
- expression: brows (height, inner-end tilt), eyes (openness), mouth
  (curvature, openness, width, asymmetry), nose wrinkle and frown lines

Expressions are drawn at a random intensity around a neutral face, so weak
expressions look neutral, and the class prototypes overlap the way real FER
does (Fear vs Surprise, Sad vs Neutral vs Angry). A few percent of faces are
drawn with another class's expression while keeping their label (label noise
that leaves FER2013's class proportions intact). Usage follows FER2013's
Training / PublicTest / PrivateTest 80/10/10 split, stratified per class.
Deterministic per (n, seed).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .fer import FerData, stratified_holdout
from .schema import LABELS, SIZE, USAGES, Log, log_stderr

DEFAULT_SYNTH_N = 4000  # sized so `fersearch tune --trials 8` takes a few minutes on 2 CPU cores
DEFAULT_SEED = 0
SYNTH_VERSION = 2  # bump when the drawing changes: auto-generated default sets are then redrawn
SYNTH_DIR = Path("data/synthetic")
MARKER = "synthetic.json"  # beside the CSV: how it was made, and the CSV's hash

# Real FER2013 class counts (train + public + private), DESIGN.md.
FER_COUNTS = np.array([4953, 547, 5121, 8989, 6077, 4002, 6198])
FER_PROPORTIONS = FER_COUNTS / FER_COUNTS.sum()
USAGE_FRACTIONS = (0.8, 0.1, 0.1)
LABEL_NOISE = 0.04

# Expression prototypes at full intensity, as offsets from the neutral face:
# brow_raise (px up), brow_tilt (px, + = inner ends down: the angry V), eye_open
# (x neutral height), mouth_curve (px, + = corners up), mouth_open (px),
# mouth_width (x neutral), wrinkle (nose, 0..1), frown (glabella lines, 0..1),
# mouth_asym (px, one corner raised).
_PARAMS = ("brow_raise", "brow_tilt", "eye_open", "mouth_curve", "mouth_open",
           "mouth_width", "wrinkle", "frown", "mouth_asym")
_PROTO = np.array([
    # raise tilt  eye  curve open width wrinkle frown asym
    [-1.3,  2.2, 0.75, -0.8, 0.4, 0.90, 0.0, 1.0, 0.0],  # Angry
    [-0.9,  1.4, 0.60, -1.2, 0.8, 0.92, 1.0, 0.5, 1.5],  # Disgust
    [1.8,  -1.5, 1.40, -0.7, 1.8, 1.15, 0.0, 0.2, 0.0],  # Fear
    [0.2,   0.0, 0.70, 3.0, 1.4, 1.20, 0.0, 0.0, 0.0],  # Happy
    [0.5,  -1.8, 0.75, -2.0, 0.0, 0.95, 0.0, 0.2, 0.0],  # Sad
    [2.8,  -0.4, 1.60, 0.0, 3.6, 0.80, 0.0, 0.0, 0.0],  # Surprise
    [0.0,   0.0, 1.00, 0.0, 0.0, 1.00, 0.0, 0.0, 0.0],  # Neutral
])
_NEUTRAL = _PROTO[LABELS.index("Neutral")]
# Person-to-person spread of each expression parameter (resting face, style).
_SPREAD = np.array([0.7, 0.7, 0.17, 0.7, 0.5, 0.09, 0.15, 0.15, 0.4])
# Labels whose faces get swapped in for label noise: the confusions real FER has.
_CONFUSABLE = {0: (1, 4, 6), 1: (0, 4), 2: (5, 4), 3: (6,), 4: (6, 0, 2), 5: (2, 3), 6: (4, 0)}
_CHUNK = 256


def class_counts(n: int) -> np.ndarray:
    """FER2013's class proportions scaled to n images (largest remainders; sums to n)."""
    raw = FER_PROPORTIONS * n
    counts = np.floor(raw).astype(int)
    counts[np.argsort(raw - counts)[::-1][: n - counts.sum()]] += 1
    return counts


def _usage(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Split code per image: 80/10/10 within every class (FER2013's Training/PublicTest/PrivateTest)."""
    split = np.zeros(len(labels), np.int8)
    val = stratified_holdout(labels, USAGE_FRACTIONS[1], rng)
    split[val] = 1
    rest = np.flatnonzero(~val)
    split[rest[stratified_holdout(labels[rest], USAGE_FRACTIONS[2] / (1 - USAGE_FRACTIONS[1]), rng)]] = 2
    return split


def _face_params(n: int, labels: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per-image identity, pose, nuisance and expression parameters (1-D arrays of length n)."""
    u = rng.uniform
    p: dict[str, np.ndarray] = {
        # pose
        "cx": 24 + rng.normal(0, 1.6, n), "cy": 25 + rng.normal(0, 1.6, n),
        "rot": rng.normal(0, 0.10, n), "scale": u(1.0, 1.25, n),
        # identity
        "face_w": u(13.5, 17.0, n), "face_h": u(17.5, 21.0, n),
        "skin": u(0.40, 0.85, n), "hair": u(0.03, 0.55, n), "hairline": u(-16, -11, n),
        "hair_side": u(0.0, 1.0, n) < 0.6, "eye_dx": u(6.8, 8.6, n), "eye_y": u(-4.5, -2.0, n),
        "eye_w": u(2.8, 3.6, n), "brow_gap": u(3.2, 4.4, n), "brow_w": u(3.4, 4.6, n),
        "mouth_y": u(7.5, 10.0, n), "mouth_w": u(5.8, 8.0, n), "nose_y": u(2.5, 4.5, n),
        # imaging
        "bg": u(0.05, 0.95, n), "bg_grad": rng.normal(0, 0.15, n),
        "light_x": rng.normal(0, 0.25, n), "light_y": rng.normal(0, 0.15, n),
        "contrast": u(0.75, 1.3, n), "gamma": np.exp(rng.normal(0, 0.25, n)),
        "noise": u(0.0, 0.035, n), "blur": rng.choice([0.0, 0.5, 0.8, 1.1], n, p=[0.25, 0.35, 0.25, 0.15]),
        "occlude": u(0, 1, n) < 0.08,
        "occ_x": u(-14, 14, n), "occ_y": u(-12, 16, n), "occ_w": u(4, 11, n), "occ_h": u(3, 9, n),
        "occ_val": u(0, 1, n),
    }
    # Label noise: a few faces show a confusable class's expression but keep their label.
    shown = labels.copy()
    noisy = np.flatnonzero(u(0, 1, n) < LABEL_NOISE)
    for i in noisy:  # a few hundred at most: per-image, not per-pixel
        shown[i] = rng.choice(_CONFUSABLE[int(labels[i])])
    intensity = rng.beta(2.6, 1.3, n)  # mostly clear, some subtle (subtle ones look neutral)
    expr = _NEUTRAL + intensity[:, None] * (_PROTO[shown] - _NEUTRAL) + rng.normal(0, 1, (n, len(_PARAMS))) * _SPREAD
    for j, name in enumerate(_PARAMS):
        p[name] = expr[:, j]
    p["eye_open"] = np.clip(p["eye_open"], 0.25, 2.0)
    p["mouth_open"] = np.clip(p["mouth_open"], 0.0, 4.5)
    p["wrinkle"] = np.clip(p["wrinkle"], 0, 1)
    p["frown"] = np.clip(p["frown"], 0, 1)
    return p


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


def _draw(p: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Render a batch of faces from their parameters: float32 (B, 48, 48) in 0..1."""
    b = len(p["cx"])
    # float32 throughout: half the memory traffic of float64, and chunks small enough to stay in cache
    c = {k: v.astype(np.float32)[:, None, None] for k, v in p.items()}
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


def generate(n: int = DEFAULT_SYNTH_N, seed: int = DEFAULT_SEED,
             preset: str = "default") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images uint8 (n,48,48), labels int64 (n,), split int8 (n,) 0/1/2 = Training/PublicTest/PrivateTest).
    `preset` (fersearch.data.presets) changes the drawing; "default" is the embedded set."""
    from . import presets

    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    presets.check_preset(preset)
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(LABELS)), class_counts(n))
    labels = rng.permutation(labels).astype(np.int64)
    split = _usage(labels, rng)
    params = _face_params(n, labels, rng)
    params = presets.adjust_params(preset, params, dict(zip(_PARAMS, _NEUTRAL)), np.random.default_rng([seed, 1, 0]))
    images = np.empty((n, SIZE, SIZE), np.uint8)
    for start in range(0, n, _CHUNK):
        sl = slice(start, start + _CHUNK)
        chunk_rng = np.random.default_rng([seed, start // _CHUNK])  # noise independent of other chunks
        chunk = {k: v[sl] for k, v in params.items()}
        preset_rng = np.random.default_rng([seed, 1, 1 + start // _CHUNK])  # a stream the default never draws from
        img = presets.finish_images(preset, _draw(chunk, chunk_rng), chunk, preset_rng)
        images[sl] = np.rint(img * 255).astype(np.uint8)
    return images, labels, split


def synthetic_data(n: int = DEFAULT_SYNTH_N, seed: int = DEFAULT_SEED, preset: str = "default") -> FerData:
    """The synthetic set in memory (no file), e.g. for tests."""
    images, labels, split = generate(n, seed, preset)
    what = f"n={n}, seed={seed}" + ("" if preset == "default" else f", preset={preset}")
    return FerData(images, labels, split, source=f"synthetic({what})", format="synthetic",
                   notes=[f"synthetic faces generated by fersearch.synth ({what}); not real FER2013"],
                   synthetic=True)


def write_synthetic(out_dir: str | Path = SYNTH_DIR, n: int = DEFAULT_SYNTH_N, seed: int = DEFAULT_SEED,
                    *, auto: bool = False, preset: str = "default") -> Path:
    """Generate and write `<out_dir>/fer2013.csv` (FER2013's own format) and its marker; returns the CSV path."""
    from .writer import write_fer2013_csv
    from ..io import file_sha256, write_json

    images, labels, split = generate(n, seed, preset)
    path = write_fer2013_csv(Path(out_dir) / "fer2013.csv", images, labels, [USAGES[s] for s in split])
    write_json(Path(out_dir) / MARKER, {"generator": "fersearch.synth", "version": SYNTH_VERSION, "n": n,
                                         "seed": seed, "preset": preset, "auto": auto, "sha256": file_sha256(path)})
    return path


def read_marker(folder: Path) -> dict | None:
    """The synthetic-set marker in `folder`, or None (missing or unreadable: then the CSV is not ours)."""
    from ..io import read_json

    try:
        marker = read_json(folder / MARKER)
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and marker.get("generator") == "fersearch.synth" else None


def default_synthetic(log: Log = log_stderr) -> Path:
    """data/synthetic/fer2013.csv, generated on first use (and redrawn when an auto-generated one is stale)."""
    path = SYNTH_DIR / "fer2013.csv"
    marker = read_marker(SYNTH_DIR)
    current = {"version": SYNTH_VERSION, "n": DEFAULT_SYNTH_N, "seed": DEFAULT_SEED}
    stale = marker is None or (marker.get("auto") and any(marker.get(k) != v for k, v in current.items()))
    if not path.is_file() or stale:
        log(f"no data/fer2013.csv: generating the synthetic default set ({DEFAULT_SYNTH_N} faces) in {SYNTH_DIR}/ ...")
        write_synthetic(SYNTH_DIR, DEFAULT_SYNTH_N, DEFAULT_SEED, auto=True)
    log(f"using SYNTHETIC faces {path} (not FER2013; put fer2013.csv in data/ to use the real data, see data/README.md)")
    return path
