"""Opening images: RGB, EXIF orientation applied, errors that name the file.

Why not just ``Image.open(...).convert("RGB")``:

* a phone photo stores its rotation in EXIF, and boxes drawn in a viewer are in the *rotated*
  frame. vlmdet always shows the model the image as a viewer would (``ImageOps.exif_transpose``)
  and moves boxes with it when a file's annotations were made on the raw pixels
  (see :func:`exif_boxes_to_display`);
* ``convert("RGB")`` clips wider pixel types instead of scaling them: a 16-bit PNG (mode
  ``I;16``, values up to 65535) becomes an almost white picture, a float image (``F``, 0..1) a
  black one. :func:`to_rgb` scales them to 8 bits, and composites transparent images over white
  the way transformers' ``convert_rgb`` does, so every reader hands the model the picture a viewer
  shows. A pixel range it cannot know (floats beyond 0..255) is an error naming the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from vlmdet.data.sample import DataError

_SWAPS_AXES = {5, 6, 7, 8}
_INT_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "I;16S"}
_ALPHA_MODES = {"RGBA", "LA", "La", "RGBa", "PA"}


def to_rgb(image: Image.Image, where: str = "") -> Image.Image:
    """``image`` as 8-bit RGB showing what a viewer shows (see the module docstring).

    Raises :class:`DataError` naming ``where`` for pixel data whose range cannot be known.
    """
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in _INT_MODES or mode == "F":
        arr = np.asarray(image, dtype=np.float64)
        finite = arr[np.isfinite(arr)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
        if mode == "F" and lo >= 0 and hi <= 1.0:
            scale = 255.0  # a float image in 0..1
        elif lo >= 0 and hi <= 255:
            scale = 1.0  # already 8-bit values in a wider type
        elif mode != "F" and lo >= 0 and hi <= 65535:
            scale = 255.0 / 65535.0  # 16-bit
        else:
            raise DataError(
                f"{where or 'image'}: {mode} pixels range {lo:g}..{hi:g}, which has no known mapping to 8-bit colour; "
                "save the image as 8- or 16-bit"
            )
        arr = np.clip(np.nan_to_num(arr) * scale + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if mode in _ALPHA_MODES or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    try:
        return image.convert("RGB")
    except (ValueError, OSError) as exc:
        raise DataError(f"{where or 'image'}: cannot convert a {mode} image to RGB ({exc}); save it as RGB") from None


@dataclass(frozen=True)
class ImageInfo:
    raw_wh: tuple[int, int]
    orientation: int

    @property
    def display_wh(self) -> tuple[int, int]:
        w, h = self.raw_wh
        return (h, w) if self.orientation in _SWAPS_AXES else (w, h)


def _too_big(path: Path | str, exc: Exception) -> DataError:
    return DataError(
        f"{path}: the image is larger than PIL's decompression-bomb limit of {Image.MAX_IMAGE_PIXELS:,} pixels ({exc}). "
        "Downscale it (a VLM sees at most a few megapixels anyway), or raise PIL.Image.MAX_IMAGE_PIXELS if you trust the file"
    )


def probe_image(path: Path, where: str, verify: bool = True) -> ImageInfo:
    """Size and EXIF orientation of ``path``; with ``verify``, decode it fully to catch corruption
    and pixel data that cannot become RGB."""
    if not path.is_file():
        raise DataError(f"{where}: image file not found: {path}. Fix the path")
    try:
        with Image.open(path) as im:
            raw_wh = im.size
            orientation = int(im.getexif().get(0x0112, 1) or 1)
            if verify:
                im.load()
                if im.mode not in ("RGB", "L"):
                    to_rgb(im, f"{where} ({path})")
    except Image.DecompressionBombError as exc:
        raise _too_big(f"{where} ({path})", exc) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"{where}: cannot decode image {path} ({exc.__class__.__name__}: {exc}). Replace or remove the file") from None
    return ImageInfo(raw_wh, orientation if 1 <= orientation <= 8 else 1)


def open_rgb(path: Path, exif: bool = True) -> Image.Image:
    """Decode ``path`` to 8-bit RGB (:func:`to_rgb`); apply EXIF orientation unless ``exif=False``."""
    try:
        with Image.open(path) as im:
            rgb = to_rgb(ImageOps.exif_transpose(im) if exif else im, str(path))
            return rgb.copy() if rgb is im else rgb  # never hand out the file-backed image the `with` closes
    except Image.DecompressionBombError as exc:
        raise _too_big(path, exc) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"cannot decode image {path} ({exc}); replace or remove the file") from None


def exif_boxes_to_display(boxes: np.ndarray, orientation: int, raw_wh: tuple[int, int]) -> np.ndarray:
    """Move ``(n, 4)`` xyxy boxes drawn on the raw pixels to the EXIF-oriented frame.

    Same geometry as ``PIL.ImageOps.exif_transpose`` (orientation 2..8).
    """
    W, H = raw_wh
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    x1, y1, x2, y2 = b.T
    if orientation == 2:  # mirrored left-right
        out = [W - x2, y1, W - x1, y2]
    elif orientation == 3:  # rotated 180
        out = [W - x2, H - y2, W - x1, H - y1]
    elif orientation == 4:  # mirrored top-bottom
        out = [x1, H - y2, x2, H - y1]
    elif orientation == 5:  # transpose
        out = [y1, x1, y2, x2]
    elif orientation == 6:  # rotate 90 clockwise to display
        out = [H - y2, x1, H - y1, x2]
    elif orientation == 7:  # transverse
        out = [H - y2, W - x2, H - y1, W - x1]
    elif orientation == 8:  # rotate 90 counter-clockwise to display
        out = [y1, W - x2, y2, W - x1]
    else:
        return b.copy()
    return np.stack(out, axis=1)
