# RAVLT-S + Mask R-CNN, 3x schedule on COCO 2017 (reported: 51.4 box AP / 45.5 mask AP).
# Where the numbers come from: the official config, github.com/qhfan/RALA
# detection/configs/RALA/maskrcnn_s_3x.py (mmdet 2.x): the 1x recipe
# (mask-rcnn_ravlt-s_fpn_1x_coco.py: same backbone, drop path 0.15, optimizer) with the
# DETR-style multi-scale training augmentation (random flip; either a multi-scale resize,
# or resize - random crop - multi-scale resize) and 36 epochs, the lr divided by 10 after
# epochs 27 and 33 (after mmdet's 500-iteration linear warm-up). Test: mmdet's
# single-scale 1333x800 resize, padded to a multiple of 32, as the official pipeline.
_base_ = ['./mask-rcnn_ravlt-s_fpn_1x_coco.py', '../_base_/pipelines/detr_multiscale_aug.py']

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args={{_base_.backend_args}}),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    {{_base_.detr_multiscale_aug}},
    dict(type='PackDetInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))

max_epochs = 36
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[27, 33], gamma=0.1),
]
