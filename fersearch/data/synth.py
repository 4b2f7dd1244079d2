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

from .faces import draw_faces
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
        img = presets.finish_images(preset, draw_faces(chunk, chunk_rng), chunk, preset_rng)
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
    from ..io import file_sha256, write_json
    from .writer import write_fer2013_csv

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
    log(f"using SYNTHETIC faces {path} (not FER2013; put fer2013.csv in data/ to use the real data, "
        f"see data/README.md)")
    return path
