# RAVLT-S + Cascade Mask R-CNN, 3x schedule on COCO 2017 (reported: 54.2 box AP / 46.8 mask AP).
# Where the numbers come from: the official config, github.com/qhfan/RALA
# detection/configs/RALA/casrcnn_s_3x.py and _base_/models/RALA_cas_rcnn.py (mmdet 2.x, the
# Swin-style recipe): drop path 0.15, an extra LayerNorm2d on every output (out_norms=True),
# FPN on [64, 128, 320, 512]; three box heads with 4 shared convs (SyncBN) and one fc,
# class-specific regression of decoded boxes with GIoU loss (weight 10); AdamW (lr 1e-4, betas
# 0.9/0.999, weight decay 0.05, none on norms), 8 GPUs x 2 images, the DETR-style multi-scale
# training augmentation, 36 epochs with the lr divided by 10 after epochs 27 and 33 (after
# mmdet's 500-iteration linear warm-up), fp16. Test: mmdet's single-scale 1333x800 resize,
# padded to a multiple of 32, as the official pipeline.
# Weights: the official ImageNet-1K RAVLT-S checkpoint (Hugging Face, converted on load).
_base_ = [
    'mmdet::_base_/models/cascade-mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
    '../_base_/pipelines/detr_multiscale_aug.py',
]
custom_imports = dict(imports=['zoo.mm'], allow_failed_imports=False)

# The three stages' box heads differ only in the target stds of their box coders.
_box_head = dict(
    type='ConvFCBBoxHead',
    num_shared_convs=4,
    num_shared_fcs=1,
    in_channels=256,
    conv_out_channels=256,
    fc_out_channels=1024,
    roi_feat_size=7,
    num_classes=80,
    reg_class_agnostic=False,
    reg_decoded_bbox=True,
    norm_cfg=dict(type='SyncBN', requires_grad=True),
    loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
    loss_bbox=dict(type='GIoULoss', loss_weight=10.0))
_coder = dict(type='DeltaXYWHBBoxCoder', target_means=[0., 0., 0., 0.])

model = dict(
    backbone=dict(
        _delete_=True,
        type='RAVLT',
        arch='small',
        drop_path_rate=0.15,
        out_norms=True,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://huggingface.co/aldjalkdf/RAVLT/resolve/main/RAVLT_S.pth')),
    neck=dict(in_channels=[64, 128, 320, 512]),
    roi_head=dict(bbox_head=[
        dict(_box_head, bbox_coder=dict(_coder, target_stds=[0.1, 0.1, 0.2, 0.2])),
        dict(_box_head, bbox_coder=dict(_coder, target_stds=[0.05, 0.05, 0.1, 0.1])),
        dict(_box_head, bbox_coder=dict(_coder, target_stds=[0.033, 0.033, 0.067, 0.067])),
    ]))

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args={{_base_.backend_args}}),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    {{_base_.detr_multiscale_aug}},
    dict(type='PackDetInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))

optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0., custom_keys=dict(norm=dict(decay_mult=0.))))
max_epochs = 36
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[27, 33], gamma=0.1),
]
