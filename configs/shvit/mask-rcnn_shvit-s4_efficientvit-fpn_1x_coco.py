# SHViT-S4 + Mask R-CNN, 1x schedule on COCO 2017: the official recipe (reported 39.0 box AP,
# 35.9 mask AP). Where the numbers come from: the official detection code
# (github.com/ysj9909/SHViT, downstream/configs/mask_rcnn_shvit_s4_fpn_1x_coco.py, mmdet
# 2.x, with the base model of EfficientViT's downstream code, microsoft/Cream): the three
# stages (strides 16/32/64) as they are (BatchNorms in eval mode), the EfficientViT-style FPN
# (necks/) with two transposed-conv levels (strides 4 and 8) and no extra levels, AdamW
# (lr 1e-4, betas 0.9/0.999, weight decay 0.05), 12 epochs with linear warm-up over 500 iterations and the lr
# divided by 10 after epochs 8 and 11 (mmdet's schedule_1x), the standard single-scale COCO
# pipeline, 8 GPUs x 2 images. SHViT has no drop path.
# Weights: the official ImageNet-1K checkpoint (GitHub release, converted on load).
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['zoo.mm', 'necks'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='SHViT',
        arch='s4',
        out_indices=(0, 1, 2),
        frozen_stages=-1,
        norm_eval=True,  # the official backbone's train() keeps every BatchNorm in eval mode
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://github.com/ysj9909/SHViT/releases/download/v1.0/shvit_s4.pth')),
    neck=dict(
        _delete_=True,
        type='EfficientViTFPN',
        in_channels=[224, 336, 448],
        out_channels=256,
        start_level=0,
        num_outs=5,
        num_extra_trans_convs=2))

optim_wrapper = dict(optimizer=dict(_delete_=True, type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05))
