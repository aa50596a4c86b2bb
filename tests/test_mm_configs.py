"""Every mm config under configs/ loads, builds, and runs in 'loss', 'predict' and 'tensor' modes.

The models run on two tiny random images with synthetic annotations (and few proposals);
pretrained weights are not loaded (no network), and SyncBN becomes BN (no CPU kernel).
Configs that only change a sibling config (another variant of the same recipe: ``_base_ =
'./...'``) run in all three modes under ``-m all_variants``; in the slow suite (which CI runs)
they are built on the meta device and run their backbone, neck and heads there, which checks
every shape (channels of the neck and heads against the backbone's) without computing anything.
"""
from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip('mmdet')
pytest.importorskip('mmseg')
import zoo.mm  # noqa: E402,F401
from mmengine.config import Config  # noqa: E402
from mmengine.registry import MODELS, init_default_scope  # noqa: E402
from mmengine.structures import InstanceData, PixelData  # noqa: E402

from zoo.mm.compat import sync_bn_to_bn  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p for p in (REPO / 'configs').rglob('*.py') if '_base_' not in p.parts)
SIZES = [(64, 96), (96, 64)]  # (H, W) of the two test images; segmentation uses the first twice


def _bases(path: Path) -> list[str]:
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, 'id', None) == '_base_' for t in node.targets):
            return [c.value for c in ast.walk(node.value) if isinstance(c, ast.Constant) and isinstance(c.value, str)]
    return []


DERIVED = {p for p in CONFIGS if any(b.startswith('./') for b in _bases(p))}


pytestmark = pytest.mark.usefixtures('one_thread')  # many small ops (conftest)


def _config(path: Path) -> Config:
    cfg = Config.fromfile(str(path))
    cfg.model.backbone.pop('init_cfg', None)  # no pretrained weights: no network in tests
    sync_bn_to_bn(cfg.model)
    if cfg.default_scope == 'mmseg':
        cfg.model.data_preprocessor.size = SIZES[0]  # pad to the tiny inputs, not to 512x512
    if 'rpn_head' in cfg.model:  # tiny images: a few dozen proposals, not a thousand
        cfg.model.train_cfg.rpn_proposal.update(nms_pre=100, max_per_img=50)
        rcnn = cfg.model.train_cfg.rcnn  # one dict, or one per stage (Cascade R-CNN)
        for stage in rcnn if isinstance(rcnn, list) else [rcnn]:
            stage.sampler.num = 32
        cfg.model.test_cfg.rpn.update(nms_pre=100, max_per_img=50)
    return cfg


def _detection_batch(num_classes: int, with_masks: bool) -> dict:
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    g = torch.Generator().manual_seed(0)
    inputs, samples = [], []
    for h, w in SIZES:
        inputs.append(torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g))
        sample = DetDataSample(metainfo=dict(img_id=0, img_shape=(h, w), ori_shape=(h, w), scale_factor=(1.0, 1.0)))
        boxes = torch.tensor([[4.0, 6.0, 40.0, 50.0], [20.0, 10.0, 60.0, 44.0]])
        gt = InstanceData(bboxes=boxes, labels=torch.tensor([0, num_classes - 1]))
        if with_masks:
            masks = np.zeros((2, h, w), np.uint8)
            for mask, (x0, y0, x1, y1) in zip(masks, boxes.int().tolist()):
                mask[y0:y1, x0:x1] = 1
            gt.masks = BitmapMasks(masks, h, w)
        sample.gt_instances = gt
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def _segmentation_batch(num_classes: int) -> dict:
    from mmseg.structures import SegDataSample
    g = torch.Generator().manual_seed(0)
    h, w = SIZES[0]
    inputs, samples = [], []
    for _ in range(2):  # two images: batch statistics in the heads' BatchNorms
        inputs.append(torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g))
        sample = SegDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w)))
        sample.gt_sem_seg = PixelData(data=torch.randint(0, num_classes, (1, h, w), generator=g))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def _id(path: Path) -> str:
    return str(path.relative_to(REPO / 'configs'))


# 73 configs, each built with its weight init run on meta tensors: in the slow suite, which CI runs
@pytest.mark.slow
@pytest.mark.parametrize('path', sorted(DERIVED), ids=_id)
def test_variant_config_shapes_fit_on_the_meta_device(path: Path):
    cfg = _config(path)
    init_default_scope(cfg.default_scope)
    with torch.device('meta'):
        model = MODELS.build(cfg.model)
        x = torch.zeros(2, 3, *SIZES[0])
    model.eval()
    with torch.no_grad():
        feats = model.extract_feat(x)
        heads = [model.decode_head] if cfg.default_scope == 'mmseg' else [
            model.bbox_head if 'bbox_head' in cfg.model else model.rpn_head]
        outputs = [head(feats) for head in heads]
    assert list(_tensors(outputs)) and all(t.is_meta for t in _tensors(outputs))
    if cfg.default_scope == 'mmseg' and 'auxiliary_head' in cfg.model:
        assert list(_tensors(model.auxiliary_head(feats)))


@pytest.mark.parametrize('path', [pytest.param(p, marks=pytest.mark.all_variants) if p in DERIVED else p
                                  for p in CONFIGS], ids=_id)
def test_config_builds_and_runs_in_every_mode(path: Path):
    cfg = _config(path)
    init_default_scope(cfg.default_scope)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    if cfg.default_scope == 'mmdet':
        head = cfg.model.get('bbox_head') or cfg.model.roi_head.bbox_head
        head = head[0] if isinstance(head, list) else head  # Cascade R-CNN: one per stage
        batch = _detection_batch(head.num_classes, with_masks='mask_head' in cfg.model.get('roi_head', {}))
    else:
        batch = _segmentation_batch(cfg.model.decode_head.num_classes)

    model.train()
    data = model.data_preprocessor(batch, training=True)
    losses = model(**data, mode='loss')
    loss, _ = model.parse_losses(losses)
    assert torch.isfinite(loss), losses

    model.eval()
    with torch.no_grad():
        data = model.data_preprocessor(batch, training=False)
        predictions = model(**data, mode='predict')
        tensors = model(**data, mode='tensor')
    assert len(predictions) == len(batch['inputs'])
    if cfg.default_scope == 'mmdet':
        assert all('pred_instances' in p for p in predictions)
        if 'mask_head' in cfg.model.get('roi_head', {}):
            assert all('masks' in p.pred_instances for p in predictions)
    else:
        assert all(p.pred_sem_seg.data.shape[-2:] == SIZES[0] for p in predictions)
    flat = list(_tensors(tensors))
    assert flat and all(torch.isfinite(t).all() for t in flat)


def _tensors(outputs):
    if torch.is_tensor(outputs):
        yield outputs
    else:
        assert isinstance(outputs, (tuple, list)), type(outputs)
        for item in outputs:
            yield from _tensors(item)
