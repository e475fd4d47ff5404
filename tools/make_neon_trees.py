"""Build ``tests/assets/neon_trees``: real aerial photographs with tree crowns boxed by people, as Pascal VOC.

Source: the sample data shipped inside the ``deepforest`` wheel on PyPI (version 2.1.0,
``deepforest/data/``): NEON Airborne Observation Platform RGB orthophotos (10 cm per pixel) with
tree-crown boxes annotated by the DeepForest authors (Weinstein et al.) in Pascal VOC XML. Three of
those images are cut into 128 x 128 tiles so that a tiny model sees a handful of crowns per image:
a crown is kept in a tile when at least half of its area lies inside (clipped, ``truncated`` 1 when
clipped); tiles without a crown are dropped. Tiles are saved as JPEG (quality 90).

Coordinates: DeepForest's XML holds 0-based pixel edges (its own reader takes them as they are);
the tiles' XML follows the VOC convention that vlmdet, supervision and detectron2 read (1-based
``xmin``/``ymin``), so ``xmin`` and ``ymin`` are written one higher.

    pip download --no-deps deepforest==2.1.0 -d /tmp/df && unzip -q /tmp/df/deepforest-2.1.0-*.whl 'deepforest/data/*' -d /tmp/df
    python tools/make_neon_trees.py /tmp/df/deepforest/data tests/assets/neon_trees
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from PIL import Image

SOURCES = ("OSBS_029", "SOAP_061", "2019_YELL_2_541000_4977000_image_crop")
TILE = 128
KEEP = 0.5


def boxes_of(xml: Path) -> np.ndarray:
    root = ET.parse(xml).getroot()
    return np.array([[float(o.find("bndbox").find(k).text) for k in ("xmin", "ymin", "xmax", "ymax")] for o in root.iter("object")])


def tile_xml(name: str, boxes: np.ndarray, truncated: np.ndarray) -> str:
    objs = "".join(
        f"  <object>\n    <name>tree</name>\n    <truncated>{int(t)}</truncated>\n    <difficult>0</difficult>\n    <bndbox>\n"
        f"      <xmin>{int(b[0]) + 1}</xmin>\n      <ymin>{int(b[1]) + 1}</ymin>\n      <xmax>{int(b[2])}</xmax>\n      <ymax>{int(b[3])}</ymax>\n"
        f"    </bndbox>\n  </object>\n" for b, t in zip(boxes, truncated))
    return (f"<annotation>\n  <folder>JPEGImages</folder>\n  <filename>{name}.jpg</filename>\n"
            f"  <size>\n    <width>{TILE}</width>\n    <height>{TILE}</height>\n    <depth>3</depth>\n  </size>\n{objs}</annotation>\n")


def main(src: Path, out: Path) -> None:
    (out / "Annotations").mkdir(parents=True, exist_ok=True)
    (out / "JPEGImages").mkdir(parents=True, exist_ok=True)
    n_tiles = n_boxes = 0
    for stem in SOURCES:
        image = Image.open(src / f"{stem}.png").convert("RGB")
        boxes = boxes_of(src / f"{stem}.xml")
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        for ty in range(image.height // TILE):
            for tx in range(image.width // TILE):
                x0, y0 = tx * TILE, ty * TILE
                clipped = np.clip(boxes - [x0, y0, x0, y0], 0, TILE)
                inside = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
                keep = inside >= KEEP * area
                if not keep.any():
                    continue
                name = f"{stem.split('_image')[0]}_{ty}_{tx}"
                image.crop((x0, y0, x0 + TILE, y0 + TILE)).save(out / "JPEGImages" / f"{name}.jpg", quality=90)
                truncated = inside[keep] < area[keep] - 1e-9
                (out / "Annotations" / f"{name}.xml").write_text(tile_xml(name, np.round(clipped[keep]), truncated))
                n_tiles += 1
                n_boxes += int(keep.sum())
    print(f"{n_tiles} tiles, {n_boxes} boxes -> {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
