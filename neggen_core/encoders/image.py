"""Image features from the pixels (Pillow and numpy): a colour histogram of the object and
descriptors of its silhouette, for the offline route where no model describes the image.

The vector is the square root of a 4x4x4 RGB histogram of the object's pixels (unit length by
construction) beside ten shape descriptors (bounding-box fill, aspect, area, Hu moments) scaled to
unit length, the whole divided by sqrt(2): one L2-normalised vector of `IMAGE_FEATURE_DIM`.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from neggen_core.images import pixel_grid, silhouette

HISTOGRAM_LEVELS = 4
SHAPE_DESCRIPTORS = 10
IMAGE_FEATURE_DIM = HISTOGRAM_LEVELS**3 + SHAPE_DESCRIPTORS


def _hu_moments(mask: np.ndarray) -> np.ndarray:
    """The seven Hu invariants of a binary mask, log-scaled (sign kept)."""
    rows, cols = np.nonzero(mask)
    y, x = rows.astype(np.float64), cols.astype(np.float64)
    area = float(len(x))
    dx, dy = x - x.mean(), y - y.mean()

    def eta(p: int, q: int) -> float:
        return float((dx**p * dy**q).sum()) / float(area ** (1 + (p + q) / 2))

    n20, n02, n11 = eta(2, 0), eta(0, 2), eta(1, 1)
    n30, n03, n21, n12 = eta(3, 0), eta(0, 3), eta(2, 1), eta(1, 2)
    a, b = n30 + n12, n21 + n03
    hu = np.array(
        [
            n20 + n02,
            (n20 - n02) ** 2 + 4 * n11**2,
            (n30 - 3 * n12) ** 2 + (3 * n21 - n03) ** 2,
            a**2 + b**2,
            (n30 - 3 * n12) * a * (a**2 - 3 * b**2) + (3 * n21 - n03) * b * (3 * a**2 - b**2),
            (n20 - n02) * (a**2 - b**2) + 4 * n11 * a * b,
            (3 * n21 - n03) * a * (a**2 - 3 * b**2) - (n30 - 3 * n12) * b * (3 * a**2 - b**2),
        ]
    )
    scaled: np.ndarray = -np.sign(hu) * np.log10(np.abs(hu) + 1e-30) / 30
    return scaled


def pixel_features(pixels: np.ndarray) -> np.ndarray:
    """The feature vector of an RGB image given as a (side, side, 3) uint8 array."""
    mask, _ = silhouette(pixels)
    has_object = mask.sum() >= 0.02 * mask.size
    chosen = pixels[mask] if has_object else pixels.reshape(-1, 3)
    bins = (chosen.astype(np.int32) * HISTOGRAM_LEVELS) // 256
    codes = (bins[:, 0] * HISTOGRAM_LEVELS + bins[:, 1]) * HISTOGRAM_LEVELS + bins[:, 2]
    histogram = np.bincount(codes, minlength=HISTOGRAM_LEVELS**3) / len(codes)
    shape = np.zeros(SHAPE_DESCRIPTORS)
    if has_object:
        rows = np.flatnonzero(mask.any(axis=1))
        cols = np.flatnonzero(mask.any(axis=0))
        height, width = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
        shape[0] = mask.sum() / (height * width)
        shape[1] = np.log(width / height)
        shape[2] = mask.mean()
        shape[3:] = _hu_moments(mask)
        shape /= np.linalg.norm(shape)
    vector = np.concatenate([np.sqrt(histogram), shape])
    unit: np.ndarray = (vector / np.linalg.norm(vector)).astype(np.float32)
    return unit


def image_features(image: Image.Image) -> np.ndarray:
    """The feature vector of an image (read under `neggen_core.images`' rules)."""
    return pixel_features(pixel_grid(image))
