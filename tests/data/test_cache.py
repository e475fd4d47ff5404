"""The training-image cache: bounded in bytes, images at the model's input size, same patch grid."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from transformers import AutoProcessor

from vlmdet.data.cache import ImageCache
from vlmdet.families import FAMILIES
from vlmdet.models.processing import model_input_wh, shrink_for_model


def test_the_cache_holds_at_most_its_byte_budget_and_still_serves_every_image():
    cache = ImageCache(max_bytes=3 * 10 * 10 * 3)  # room for three 10x10 RGB images
    loads = []

    def loader(i):
        def load():
            loads.append(i)
            return Image.new("RGB", (10, 10), (i, 0, 0))
        return load

    for i in range(5):
        assert cache.get(i, loader(i)).getpixel((0, 0)) == (i, 0, 0)
    assert len(cache) == 3 and cache.bytes == 900 and cache.refused == 2
    for i in range(5):
        cache.get(i, loader(i))
    assert loads == [0, 1, 2, 3, 4, 3, 4]  # the first three come from memory, the rest are decoded again
    assert ImageCache(0).get("x", loader(9)) is not None and len(ImageCache(0)) == 0


@pytest.mark.parametrize("family", FAMILIES)
def test_a_cached_image_gives_the_model_the_same_input(family, tiny_model_dir):
    processor = AutoProcessor.from_pretrained(tiny_model_dir(family))
    rng = np.random.default_rng(0)
    for wh in [(1024, 768), (640, 333), (97, 131), (30, 20)]:
        image = Image.fromarray(rng.integers(0, 256, (wh[1], wh[0], 3), dtype=np.uint8))
        small = shrink_for_model(image, processor)
        assert small.width <= image.width and small.height <= image.height  # never upscaled
        if small is not image:
            assert small.size == model_input_wh(processor, wh)
        full = processor.image_processor(images=[image], return_tensors="pt")
        cached = processor.image_processor(images=[small], return_tensors="pt")
        assert full["pixel_values"].shape == cached["pixel_values"].shape
        if "image_grid_thw" in full:  # Qwen: the same patch grid, so the same coordinate space
            assert full["image_grid_thw"].tolist() == cached["image_grid_thw"].tolist()
        # the processor's own resize of the original and ours differ by resampling only
        assert float((full["pixel_values"] - cached["pixel_values"]).abs().mean()) < 0.05
