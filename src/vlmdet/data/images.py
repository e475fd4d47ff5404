"""Opening images: RGB, EXIF orientation applied, errors that name the file.

Why not just ``Image.open(...).convert("RGB")``: a phone photo stores its rotation in EXIF, and
boxes drawn in a viewer are in the *rotated* frame. vlmdet always shows the model the image as a
viewer would (``ImageOps.exif_transpose``) and moves boxes with it when a file's annotations were
made on the raw pixels (see :func:`exif_boxes_to_display`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from vlmdet.data.sample import DataError

_SWAPS_AXES = {5, 6, 7, 8}


@dataclass(frozen=True)
class ImageInfo:
    raw_wh: tuple[int, int]
    orientation: int

    @property
    def display_wh(self) -> tuple[int, int]:
        w, h = self.raw_wh
        return (h, w) if self.orientation in _SWAPS_AXES else (w, h)


def probe_image(path: Path, where: str, verify: bool = True) -> ImageInfo:
    """Size and EXIF orientation of ``path``; with ``verify``, decode it fully to catch corruption."""
    if not path.is_file():
        raise DataError(f"{where}: image file not found: {path}. Fix the path, or read with on_error='skip'.")
    try:
        with Image.open(path) as im:
            raw_wh = im.size
            orientation = int(im.getexif().get(0x0112, 1) or 1)
            if verify:
                im.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(
            f"{where}: cannot decode image {path} ({exc.__class__.__name__}: {exc}). "
            f"Replace or remove the file, or read with on_error='skip'."
        ) from None
    return ImageInfo(raw_wh, orientation if 1 <= orientation <= 8 else 1)


def open_rgb(path: Path, exif: bool = True) -> Image.Image:
    """Decode ``path`` to RGB; apply EXIF orientation unless ``exif=False``."""
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im) if exif else im
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
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
