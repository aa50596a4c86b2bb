# DaViT-T + RetinaNet, 1x schedule on COCO 2017: the official recipe (reported 44.0 box AP).
# Where the numbers come from: the official detection code (github.com/dingmyu/davit,
# mmdet/configs/davit_retinanet_1x_coco.py, mmdet 2.x): the backbone returns all four stages,
# each through the extra LayerNorm of the official backbone (`norm{i}`, eps 1e-5), and the FPN
# starts at the second (start_level=1, extra conv on the last input), exactly as the official
# config, so an official RetinaNet file's keys (`backbone.norm0.*` included, FPN
# `lateral_convs.0` = stage 1) match; drop path 0.1, AdamW (lr 1e-4, betas 0.9/0.999, weight
# decay 0.05), 12 epochs (mmdet's schedule_1x), 8 GPUs x 2 images, and the same DETR-style
# multi-scale training augmentation as the Mask R-CNN recipe. Test: mmdet's single-scale
# 1333x800 resize, padded to a multiple of 32, as the official test pipeline.
# Weights: the official ImageNet-1K checkpoint through timm's copy (see the Mask R-CNN config).
_base_ = [
    'mmdet::_base_/models/retinanet_r50_fpn.py',
    'mmdet::_base_/datasets/coco_detection.py',
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
    neck=dict(in_channels=[96, 192, 384, 768], start_level=1, add_extra_convs='on_input'))

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args={{_base_.backend_args}}),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomFlip', prob=0.5),
    {{_base_.detr_multiscale_aug}},
    dict(type='PackDetInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))

optim_wrapper = dict(optimizer=dict(_delete_=True, type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05))
