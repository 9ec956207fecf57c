"""RGB image sets as SKILD training data: CIFAR-10 batches and image folders, resampling, PNG output.

Images are float32 (n, 3, H, W) in [−1, 1] (the official code's scaling, SPEC §4).  The one
exact symmetry used for augmentation is the horizontal flip; images are not periodic.
`cifar10:PATH` reads the python pickle batches as distributed; `imagefolder:PATH` lists the
image files under PATH once (ImageNet-style class subfolders or a flat folder) and decodes
only the requested ones, centre-cropped to a square and resized to --size.
"""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from skild_base.errors import InputError
from skild_phys.data.adapters import register_adapter

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".ppm")
CIFAR_SIDE = 32


def to_unit_range(images: np.ndarray) -> np.ndarray:
    """uint8 images (n, H, W, 3) -> float32 (n, 3, H, W) in [−1, 1]."""
    return (np.asarray(images, dtype=np.float32).transpose(0, 3, 1, 2) / 127.5 - 1.0).astype(np.float32)


def to_uint8(x) -> np.ndarray:
    """Images (n, 3, H, W) in [−1, 1] (clipped) -> uint8 (n, H, W, 3)."""
    x = torch.as_tensor(x).detach().cpu().to(torch.float64).clamp(-1.0, 1.0)
    return ((x + 1.0) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def centre_crop_resize(image, size: int) -> np.ndarray:
    """A PIL image as uint8 (size, size, 3): the central square, resized with bicubic filtering."""
    from PIL import Image

    image = image.convert("RGB")
    w, h = image.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    image = image.crop((left, top, left + side, top + side))
    if side != size:
        image = image.resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(image, dtype=np.uint8)


class ImageSet:
    """Shared behaviour of RGB image adapters: flips as augmentation, open boundaries."""

    periodic = False
    kind = "image"
    channels = 3
    spec = ""
    height = width = 0

    def __len__(self) -> int:
        raise NotImplementedError

    def get(self, indices) -> np.ndarray:
        """Images at `indices` as float32 (n, 3, H, W) in [−1, 1]."""
        raise NotImplementedError

    def augment(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Random horizontal flip of each image (the only exact symmetry of photographs)."""
        flip = torch.randint(0, 2, (x.shape[0],), generator=generator).bool()
        return torch.where(flip.view(-1, 1, 1, 1).to(x.device), x.flip(-1), x)

    def provenance(self) -> dict:
        """Where the data came from: spec, size and a digest of the first images."""
        head = self.get(np.arange(min(len(self), 16)))
        return {"data": self.spec, "samples": len(self), "shape": [self.channels, self.height, self.width],
                "data_attrs": {"kind": self.kind}, "data_digest": hashlib.sha256(head.tobytes()).hexdigest()[:16]}


# What a CIFAR-10 batch pickle may name: NumPy's array reconstruction and nothing else (the dict,
# lists, bytes and ints of a batch need no globals).  Any other global — os.system, builtins.eval,
# a class with a __reduce__ — is refused before it is called, so a crafted file runs no code.
_CIFAR_GLOBALS = {(f"numpy.{core}.{module}", name) for core in ("core", "_core")
                  for module, name in (("multiarray", "_reconstruct"), ("numeric", "_frombuffer"))}
_CIFAR_GLOBALS |= {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}


class _CifarUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in _CIFAR_GLOBALS:
            raise pickle.UnpicklingError(f"it names {module}.{name}, which no CIFAR-10 batch holds")
        return super().find_class(module, name)


def load_cifar_batch(path) -> dict:
    """One CIFAR-10 batch pickle, read with an unpickler that admits only NumPy arrays and plain values."""
    with open(path, "rb") as fh:
        try:
            batch = _CifarUnpickler(fh, encoding="bytes").load()
        except pickle.UnpicklingError as err:
            raise InputError(f"{path} is not a CIFAR-10 pickle batch: {err}") from None
        except (EOFError, TypeError, ValueError, AttributeError, IndexError, MemoryError):
            raise InputError(f"{path} is not a CIFAR-10 pickle batch") from None
    if not isinstance(batch, dict):
        raise InputError(f"{path} is not a CIFAR-10 pickle batch: it holds a {type(batch).__name__}, not a dict")
    return batch


@register_adapter("cifar10")
class Cifar10(ImageSet):
    """CIFAR-10 as distributed: the pickle batches of `cifar-10-batches-py` (50 000 × 3 × 32 × 32 uint8).

    PATH is that folder (its training batches data_batch_1, data_batch_2, ...), a folder
    holding it, or one batch file (e.g. `test_batch`).
    """

    def __init__(self, path, size: int | None = None):
        if size is not None and size != CIFAR_SIDE:
            raise InputError(f"CIFAR-10 images are {CIFAR_SIDE}x{CIFAR_SIDE}; omit --size or pass {CIFAR_SIDE}")
        files = _cifar_files(Path(path))
        arrays = []
        for f in files:
            batch = load_cifar_batch(f)
            try:
                data = np.asarray(batch[b"data"] if b"data" in batch else batch["data"], dtype=np.uint8)
            except (KeyError, TypeError, ValueError):
                raise InputError(f"{f} is not a CIFAR-10 pickle batch: it holds no image data") from None
            if data.ndim != 2 or data.shape[1] != 3 * CIFAR_SIDE**2:
                raise InputError(f"{f} holds arrays of shape {data.shape}, not CIFAR-10's (n, 3072)")
            arrays.append(data.reshape(-1, 3, CIFAR_SIDE, CIFAR_SIDE))
        self.array = np.concatenate(arrays)  # uint8 (n, 3, 32, 32), compact
        if len(self.array) == 0:
            raise InputError(f"{path} holds no images")
        self.spec = f"cifar10:{path}"
        self.height = self.width = CIFAR_SIDE

    def __len__(self) -> int:
        return self.array.shape[0]

    def get(self, indices) -> np.ndarray:
        """Images at `indices` as float32 (n, 3, 32, 32) in [−1, 1]."""
        return (self.array[np.asarray(indices)].astype(np.float32) / 127.5 - 1.0).astype(np.float32)


def write_cifar_batches(folder, images: np.ndarray, per_batch: int = 10000, name: str = "data_batch") -> list[Path]:
    """Write uint8 images (n, 32, 32, 3) as CIFAR-10 pickle batches FOLDER/{name}_1, ... (labels all 0)."""
    images = np.asarray(images, dtype=np.uint8)
    if images.ndim != 4 or images.shape[1:] != (CIFAR_SIDE, CIFAR_SIDE, 3):
        raise ValueError(f"CIFAR-10 batches hold (n, 32, 32, 3) uint8 images, got {images.shape}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for b, start in enumerate(range(0, len(images), per_batch), 1):
        part = images[start:start + per_batch]
        path = folder / f"{name}_{b}"
        with open(path, "wb") as fh:
            pickle.dump({b"data": part.transpose(0, 3, 1, 2).reshape(len(part), -1), b"labels": [0] * len(part),
                         b"batch_label": f"{name} {b}".encode()}, fh)
        paths.append(path)
    return paths


def _cifar_files(path: Path) -> list[Path]:
    """The batch files a CIFAR-10 PATH stands for; one-sentence error if there are none."""
    if path.is_file():
        return [path]
    for folder in (path, path / "cifar-10-batches-py"):
        files = [f for f in folder.glob("data_batch_*") if f.is_file() and f.name[len("data_batch_"):].isdigit()]
        if files:
            return sorted(files, key=lambda f: int(f.name[len("data_batch_"):]))
    raise InputError(f"no CIFAR-10 batches (data_batch_1, data_batch_2, ...) under {path}")


@register_adapter("imagefolder")
class ImageFolder(ImageSet):
    """Image files under PATH (class subfolders or flat), centre-cropped and resized to size × size."""

    def __init__(self, path, size: int | None = None):
        root = Path(path)
        if not root.is_dir():
            raise InputError(f"image folder {path} does not exist")
        if size is None or size < 1:
            raise InputError("imagefolder data need --size, the side the images are cropped and resized to")
        self.files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not self.files:
            raise InputError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) under {path}")
        self.spec = f"imagefolder:{path}"
        self.height = self.width = int(size)

    def __len__(self) -> int:
        return len(self.files)

    def get(self, indices) -> np.ndarray:
        """Decode the images at `indices` to float32 (n, 3, size, size) in [−1, 1]."""
        from PIL import Image, UnidentifiedImageError

        out = []
        for i in np.asarray(indices).reshape(-1):
            try:
                with Image.open(self.files[int(i)]) as image:
                    out.append(centre_crop_resize(image, self.height))
            except (UnidentifiedImageError, OSError):
                raise InputError(f"cannot decode image {self.files[int(i)]}") from None
        if not out:
            return np.zeros((0, 3, self.height, self.width), dtype=np.float32)
        return to_unit_range(np.stack(out))


# ---- resampling and the low-resolution embedding -------------------------------------- #
def lowres_side(H: int, factor: float) -> int:
    """Side of the low-resolution input for factor f: round(H / f), at least 1."""
    return max(1, int(round(H / factor)))


def bicubic_resize(x: torch.Tensor, side: int) -> torch.Tensor:
    """Bicubic resize of (B, C, H, W) to side × side, antialiased when downsampling (as PIL)."""
    if x.shape[-1] == side and x.shape[-2] == side:
        return x
    return F.interpolate(x, size=(side, side), mode="bicubic", align_corners=False,
                         antialias=side < max(x.shape[-2:]))


# ---- PNG output ------------------------------------------------------------------------ #
def image_grid(x, ncol: int, pad: int = 2) -> np.ndarray:
    """Images (n, 3, H, W) in [−1, 1] tiled row by row into one uint8 (rows·H, ncol·W, 3) array, white gaps."""
    tiles = to_uint8(x)
    n, H, W, _ = tiles.shape
    nrow = -(-n // ncol)
    grid = np.full((nrow * (H + pad) + pad, ncol * (W + pad) + pad, 3), 255, dtype=np.uint8)
    for i in range(n):
        r, c = divmod(i, ncol)
        grid[pad + r * (H + pad):pad + r * (H + pad) + H, pad + c * (W + pad):pad + c * (W + pad) + W] = tiles[i]
    return grid


def save_png(array: np.ndarray, path) -> Path:
    """Write a uint8 (H, W, 3) array as PNG."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(array)).save(path)
    return path


def save_pngs(x, folder, first_index: int = 0) -> None:
    """Write images (n, 3, H, W) in [−1, 1] as FOLDER/000000.png, ... numbered from first_index."""
    for i, tile in enumerate(to_uint8(x)):
        save_png(tile, Path(folder) / f"{first_index + i:06d}.png")
