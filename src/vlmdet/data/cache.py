"""A bounded in-memory cache of decoded images, each reduced to what the model will see.

Decoding a JPEG again at every epoch costs time; keeping every decoded image costs memory — at full
resolution a COCO-sized set is hundreds of GB. The cache keeps each image at the size the
processor would resize it to anyway (``reduce``; see :func:`vlmdet.models.processing.shrink_for_model`)
and stops adding images once ``max_bytes`` of pixels are held; the rest are decoded on every access.
``functools.lru_cache`` bounds entries, not bytes, and would evict on a size it cannot see, hence
this small class.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PIL import Image


class ImageCache:
    """``cache.get(key, load)``: the cached image for ``key``, or ``reduce(load())`` kept while it fits.

    Args:
        max_bytes: pixel bytes the cache may hold (``0`` = cache nothing).
        reduce: applied to a decoded image before it is cached and returned (e.g. shrink to the
            model's input size); identity by default.
    """

    def __init__(self, max_bytes: int, reduce: Callable[[Image.Image], Image.Image] | None = None) -> None:
        self.max_bytes = int(max_bytes)
        self.reduce = reduce or (lambda image: image)
        self._images: dict[Any, Image.Image] = {}
        self.bytes = 0
        self.hits = self.misses = self.refused = 0

    @staticmethod
    def nbytes(image: Image.Image) -> int:
        return image.width * image.height * len(image.getbands())

    def get(self, key: Any, load: Callable[[], Image.Image]) -> Image.Image:
        image = self._images.get(key)
        if image is not None:
            self.hits += 1
            return image
        self.misses += 1
        image = self.reduce(load())
        size = self.nbytes(image)
        if self.bytes + size <= self.max_bytes:
            self._images[key] = image
            self.bytes += size
        else:
            self.refused += 1
        return image

    def __len__(self) -> int:
        return len(self._images)

    def __contains__(self, key: Any) -> bool:
        return key in self._images
