#!/usr/bin/env python
"""Generate the toy detection and segmentation datasets, deterministically from a seed.

Both sets show the same scenes: one to four shapes (circle, square, triangle; random size,
rotation and colour, never overlapping) on a textured background (a two-colour gradient,
low-frequency colour blotches and pixel noise), in images of 128-256 pixels a side.

Layout under ``--out`` (default ``data/toy``, the root the toy configs read from
``$ZOO_TOY_DATA``)::

    coco/train/000000.jpg ...           COCO instances: boxes [x, y, w, h] and polygon masks
    coco/val/...
    coco/annotations/instances_{train,val}.json
    ade/images/{training,validation}/000000.jpg
    ade/annotations/{training,validation}/000000.png

ADE convention for the label maps: 0 is background ("other", ignored by mmseg's
``reduce_zero_label=True``), and 1, 2, 3 are circle, square, triangle (classes 0, 1, 2 after
the reduction). Every image is drawn from its own generator seeded by
``(seed, dataset, split, index)``, so image ``i`` does not depend on the split sizes.

    python tools/make_toy_dataset.py --out data/toy --seed 0 --num-train 200 --num-val 50
"""
from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ('circle', 'square', 'triangle')
PALETTE = ((220, 20, 60), (0, 128, 255), (60, 180, 75))
MIN_SIDE, MAX_SIDE = 128, 256
MIN_OBJECT = 24  # smallest object diameter in pixels (RetinaNet's smallest anchor is 32)
JPEG_QUALITY = 95

# Seed components that keep the two datasets' and the splits' generators apart.
_DATASET_IDS = {'coco': 1, 'ade': 2}
_SPLIT_IDS = {'train': 1, 'val': 2}


@dataclass
class Shape:
    """One drawn object: its class index, polygon (x, y pairs) and pixel mask."""

    label: int
    polygon: np.ndarray  # (N, 2) float vertices, inside the image
    mask: np.ndarray  # (H, W) bool, the pixels painted for it


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    # A gradient between two colours, low-frequency blotches and pixel noise: enough texture
    # that a detector cannot find the shapes from a flat colour alone.
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    angle = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    t = (xx * math.cos(angle) + yy * math.sin(angle))
    t = (t - t.min()) / max(float(t.max() - t.min()), 1.0)
    img = c0 + (c1 - c0) * t[..., None]
    grid = rng.normal(0, 30, (6, 6, 3)).astype(np.float32)
    blotches = [np.asarray(Image.fromarray(grid[..., c]).resize((width, height), Image.BICUBIC)) for c in range(3)]
    return img + np.stack(blotches, -1)


def _polygon(rng: np.random.Generator, label: int, cx: float, cy: float, radius: float) -> np.ndarray:
    if label == 0:  # circle, as a 32-gon (fine enough that masks match the outline)
        n, phase = 32, 0.0
    else:  # square or equilateral triangle, randomly rotated
        n, phase = (4, rng.uniform(0, math.pi / 2)) if label == 1 else (3, rng.uniform(0, 2 * math.pi / 3))
    angles = phase + 2 * math.pi * np.arange(n) / n
    return np.stack([cx + radius * np.cos(angles), cy + radius * np.sin(angles)], 1)


def _rasterise(polygon: np.ndarray, height: int, width: int) -> np.ndarray:
    # A pixel belongs to the shape when its centre lies inside the polygon (even-odd rule): the
    # COCO convention, so the drawn pixels match what pycocotools makes of the polygon.
    y, x = np.mgrid[0:height, 0:width].astype(np.float64) + 0.5
    inside = np.zeros((height, width), bool)
    for (x0, y0), (x1, y1) in zip(polygon, np.roll(polygon, -1, 0)):
        if y0 == y1:
            continue
        crosses = (y0 > y) != (y1 > y)
        inside ^= crosses & (x < x0 + (y - y0) * (x1 - x0) / (y1 - y0))
    return inside


def make_scene(rng: np.random.Generator) -> tuple[np.ndarray, list[Shape]]:
    """Draw one image and its objects.

    Args:
        rng: the image's own generator.

    Returns:
        The ``(H, W, 3)`` uint8 RGB image and its shapes (at least one).
    """
    height, width = (int(v) for v in rng.integers(MIN_SIDE, MAX_SIDE + 1, 2))
    img = _background(rng, height, width)
    shapes: list[Shape] = []
    boxes: list[np.ndarray] = []
    wanted = int(rng.integers(1, 5))
    for _ in range(50):  # rejection sampling: no two objects overlap
        if len(shapes) == wanted:
            break
        label = int(rng.integers(len(CLASSES)))
        radius = rng.uniform(MIN_OBJECT / 2, min(height, width) / 4)
        cx = rng.uniform(radius + 2, width - radius - 2)
        cy = rng.uniform(radius + 2, height - radius - 2)
        polygon = _polygon(rng, label, cx, cy, radius)
        box = np.concatenate([polygon.min(0) - 2, polygon.max(0) + 2])
        if any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in boxes):
            continue
        mask = _rasterise(polygon, height, width)
        # A colour that stands out from the background under the shape.
        under = img[mask].mean(0)
        color = rng.uniform(0, 255, 3)
        while np.abs(color - under).mean() < 60:
            color = rng.uniform(0, 255, 3)
        img[mask] = color
        shapes.append(Shape(label, polygon, mask))
        boxes.append(box)
    img = img + rng.normal(0, 8, img.shape)
    return np.clip(img, 0, 255).round().astype(np.uint8), shapes


def scene_rng(seed: int, dataset: str, split: str, index: int) -> np.random.Generator:
    """The generator that image ``index`` of a dataset's split is drawn from.

    Args:
        seed: the dataset seed.
        dataset: ``'coco'`` or ``'ade'``.
        split: ``'train'`` or ``'val'``.
        index: the image's index in its split.
    """
    return np.random.default_rng([seed, _DATASET_IDS[dataset], _SPLIT_IDS[split], index])


def _polygon_area(polygon: np.ndarray) -> float:
    x, y = polygon[:, 0], polygon[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


def make_coco(out: str | Path, seed: int = 0, num_train: int = 200, num_val: int = 50) -> Path:
    """Write the COCO-format instance dataset.

    Args:
        out: the dataset root (``coco/`` is created under it).
        seed: the seed every image is drawn from.
        num_train: training images.
        num_val: validation images.

    Returns:
        The ``coco`` directory.
    """
    root = Path(out) / 'coco'
    (root / 'annotations').mkdir(parents=True, exist_ok=True)
    categories = [dict(id=i + 1, name=name, supercategory='shape') for i, name in enumerate(CLASSES)]
    for split, count in (('train', num_train), ('val', num_val)):
        (root / split).mkdir(exist_ok=True)
        images, annotations = [], []
        for index in range(count):
            img, shapes = make_scene(scene_rng(seed, 'coco', split, index))
            name = f'{index:06d}.jpg'
            Image.fromarray(img).save(root / split / name, quality=JPEG_QUALITY)
            images.append(dict(id=index + 1, file_name=name, height=img.shape[0], width=img.shape[1]))
            for shape in shapes:
                (x0, y0), (x1, y1) = shape.polygon.min(0), shape.polygon.max(0)
                annotations.append(dict(
                    id=len(annotations) + 1, image_id=index + 1, category_id=shape.label + 1,
                    bbox=[round(float(v), 2) for v in (x0, y0, x1 - x0, y1 - y0)],
                    area=round(_polygon_area(shape.polygon), 2),
                    segmentation=[[round(float(v), 2) for v in shape.polygon.reshape(-1)]],
                    iscrowd=0))
        coco = dict(info=dict(description=f'zoo toy shapes, seed {seed}', version='1.0'),
                    images=images, annotations=annotations, categories=categories)
        (root / 'annotations' / f'instances_{split}.json').write_text(json.dumps(coco))
    return root


def make_ade(out: str | Path, seed: int = 0, num_train: int = 200, num_val: int = 50) -> Path:
    """Write the ADE20K-format segmentation dataset (0 = background, 1..3 = the shapes).

    Args:
        out: the dataset root (``ade/`` is created under it).
        seed: the seed every image is drawn from.
        num_train: training images.
        num_val: validation images.

    Returns:
        The ``ade`` directory.
    """
    root = Path(out) / 'ade'
    for split, ade_split, count in (('train', 'training', num_train), ('val', 'validation', num_val)):
        (root / 'images' / ade_split).mkdir(parents=True, exist_ok=True)
        (root / 'annotations' / ade_split).mkdir(parents=True, exist_ok=True)
        for index in range(count):
            img, shapes = make_scene(scene_rng(seed, 'ade', split, index))
            label_map = np.zeros(img.shape[:2], np.uint8)
            for shape in shapes:
                label_map[shape.mask] = shape.label + 1
            Image.fromarray(img).save(root / 'images' / ade_split / f'{index:06d}.jpg', quality=JPEG_QUALITY)
            Image.fromarray(label_map).save(root / 'annotations' / ade_split / f'{index:06d}.png')
    return root


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--out', default='data/toy', help='dataset root (default: data/toy)')
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--num-train', type=int, default=200)
    ap.add_argument('--num-val', type=int, default=50)
    ap.add_argument('--only', choices=('coco', 'ade'), help='write one of the two datasets')
    args = ap.parse_args(argv)
    for name, fn in (('coco', make_coco), ('ade', make_ade)):
        if args.only in (None, name):
            path = fn(args.out, seed=args.seed, num_train=args.num_train, num_val=args.num_val)
            print(f'{name}: {args.num_train} train + {args.num_val} val images in {path}')


if __name__ == '__main__':
    main()
