"""Natural photographs bundled with scikit-image, cut into small square crops (test, figure and spectrum data).

Twelve photographs of natural scenes and textures ship inside scikit-image; nothing is
downloaded.  Grayscale ones are repeated to three channels.  Each photograph is resized
(bicubic) so that its short side is one of `short_sides`, then cut into random crops.
"""

from __future__ import annotations

import numpy as np

RGB_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "motorcycle_left", "motorcycle_right")
GRAY_PHOTOS = ("camera", "coins", "moon", "grass", "gravel", "brick")
PHOTOS = RGB_PHOTOS + GRAY_PHOTOS


def load_photo(name: str) -> np.ndarray:
    """One bundled photograph as uint8 (H, W, 3)."""
    import skimage.data

    if name not in PHOTOS:
        raise ValueError(f"unknown photograph {name!r}; choose from {', '.join(PHOTOS)}")
    if name.startswith("motorcycle"):
        left, right, _ = skimage.data.stereo_motorcycle()
        image = left if name.endswith("left") else right
    else:
        image = getattr(skimage.data, name)()
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    return np.ascontiguousarray(image[..., :3]).astype(np.uint8)


def photo_crops(names, n_per_photo: int, side: int, rng: np.random.Generator,
                short_sides=(128,)) -> np.ndarray:
    """Random side × side crops, n_per_photo per photograph and scale, as uint8 (n, side, side, 3)."""
    from PIL import Image

    crops = []
    for name in names:
        photo = Image.fromarray(load_photo(name))
        w, h = photo.size
        for short in short_sides:
            s = short / min(w, h)
            a = np.asarray(photo.resize((round(w * s), round(h * s)), Image.Resampling.BICUBIC))
            ys = rng.integers(0, a.shape[0] - side + 1, n_per_photo)
            xs = rng.integers(0, a.shape[1] - side + 1, n_per_photo)
            crops.extend(a[y:y + side, x:x + side] for y, x in zip(ys, xs))
    return np.stack(crops)
