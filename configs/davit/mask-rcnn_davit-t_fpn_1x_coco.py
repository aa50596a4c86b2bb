# DaViT-T + Mask R-CNN, 1x schedule on COCO 2017: the official recipe (reported 45.0 box AP,
# 41.1 mask AP). Where the numbers come from: the official detection code
# (github.com/dingmyu/davit, mmdet/configs/davit_maskrcnn_1x_coco.py and
# _base_/models/mask_rcnn_davit.py, mmdet 2.x): all four stages with an extra LayerNorm on
# each output (its backbone's `norm{i}` layers), FPN on [96, 192, 384, 768], drop path 0.1,
# AdamW (lr 1e-4, betas 0.9/0.999, weight decay 0.05, no grad clipping), 12 epochs with the
# lr divided by 10 after epochs 8 and 11 (mmdet's schedule_1x), 8 GPUs x 2 images, and the
# DETR-style multi-scale training augmentation (random flip; either a multi-scale resize,
# or resize - random crop - multi-scale resize) written here in mmdet 3 syntax. Test: mmdet's
# single-scale 1333x800 resize, padded to a multiple of 32 (mmdet's defaults, as the official
# test pipeline).
# Weights: the official ImageNet-1K checkpoint (HKU SharePoint, no direct download); the
# URL below is timm's copy of the same weights (converted layout, which the filter accepts).
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
    '../_base_/pipelines/detr_multiscale_aug.py',
]
custom_imports = dict(imports=['zoo.mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='DaViT',
        arch='tiny',
        out_indices=(0, 1, 2, 3),
        out_norms=True,
        out_norm_eps=1e-5,  # the official dense backbone's LayerNorms
        drop_path_rate=0.1,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://huggingface.co/timm/davit_tiny.msft_in1k/resolve/main/model.safetensors')),
    neck=dict(in_channels=[96, 192, 384, 768]))

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args={{_base_.backend_args}}),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    {{_base_.detr_multiscale_aug}},
    dict(type='PackDetInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))

optim_wrapper = dict(optimizer=dict(_delete_=True, type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05))
