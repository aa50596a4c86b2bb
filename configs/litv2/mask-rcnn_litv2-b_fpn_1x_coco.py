# LITv2-B + Mask R-CNN, 1x schedule on COCO 2017 (reported: 47.3 box AP, 42.6 mask AP; released
# weights:
# https://github.com/ziplab/LITv2/releases/download/v1.0/mask_rcnn_litv2_b_fpn_1x_coco.pth).
# Where the numbers come from: the official recipe (github.com/ziplab/LITv2,
# detection/configs/litv2/mask_rcnn_litv2_b_fpn_1x_coco.py): the LITv2-S recipe with LITv2-B's
# ImageNet-1K weights, drop path 0.3, gradient checkpointing (use_checkpoint=True: memory only)
# and the neck on 128, 256, 512, 1024 channels. Its base file (_base_/models/mask_rcnn_fpn.py)
# is missing from the official repository; mmdet's Mask R-CNN R50-FPN base stands in for it
# (the LITv2-S Mask R-CNN config's model, neck and heads).
# Backbone: as the LITv2-S config (outputs 1-3 with nn.LayerNorm eps 1e-5, odd_merge='floor' to
# follow the official dense backbone at inputs that are not multiples of 32).
_base_ = './mask-rcnn_litv2-s_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.3,
        with_cp=True,
        init_cfg=dict(
            checkpoint='https://github.com/ziplab/LITv2/releases/download/v1.0/litv2_b.pth')),
    neck=dict(in_channels=[128, 256, 512, 1024]))
