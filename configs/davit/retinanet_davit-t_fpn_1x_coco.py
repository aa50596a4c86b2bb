# DaViT-T + RetinaNet, 1x schedule on COCO 2017: the official recipe (reported 44.0 box AP).
# Where the numbers come from: the official detection code (github.com/dingmyu/davit,
# mmdet/configs/davit_retinanet_1x_coco.py, mmdet 2.x): the FPN starts at the second stage
# (start_level=1, extra convs on the last input), so only stages 1-3 are returned here, each
# with the extra LayerNorm of the official backbone; drop path 0.1, AdamW (lr 1e-4, betas
# 0.9/0.999, weight decay 0.05), 12 epochs (mmdet's schedule_1x), 8 GPUs x 2 images, and the
# same DETR-style multi-scale training augmentation as the Mask R-CNN recipe.
# Weights: the official ImageNet-1K checkpoint through timm's copy (see the Mask R-CNN config).
_base_ = [
    'mmdet::_base_/models/retinanet_r50_fpn.py',
    'mmdet::_base_/datasets/coco_detection.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['zoo.mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='DaViT',
        arch='tiny',
        out_indices=(1, 2, 3),
        out_norms=True,
        drop_path_rate=0.1,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://huggingface.co/timm/davit_tiny.msft_in1k/resolve/main/model.safetensors')),
    neck=dict(in_channels=[192, 384, 768], start_level=0, add_extra_convs='on_input'))

_scales = [(1333, 480), (1333, 512), (1333, 544), (1333, 576), (1333, 608), (1333, 640),
           (1333, 672), (1333, 704), (1333, 736), (1333, 768), (1333, 800)]
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args={{_base_.backend_args}}),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomChoice', transforms=[
        [dict(type='RandomChoiceResize', scales=_scales, keep_ratio=True)],
        [dict(type='RandomChoiceResize', scales=[(1333, 400), (1333, 500), (1333, 600)], keep_ratio=True),
         dict(type='RandomCrop', crop_type='absolute_range', crop_size=(384, 600), allow_negative_crop=True),
         dict(type='RandomChoiceResize', scales=_scales, keep_ratio=True)],
    ]),
    dict(type='PackDetInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))

optim_wrapper = dict(optimizer=dict(_delete_=True, type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05))
