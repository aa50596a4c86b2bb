# LITv2-M + RetinaNet, 1x schedule on COCO 2017 (reported: 46.0 box AP; released weights:
# https://github.com/ziplab/LITv2/releases/download/v1.0/retinanet_litv2_m_fpn_1x_coco.pth).
# Where the numbers come from: the official recipe (github.com/ziplab/LITv2,
# detection/configs/litv2/retinanet_litv2_m_fpn_1x_coco.py): the LITv2-S recipe with LITv2-M's
# ImageNet-1K weights, drop path 0.2 and the neck on 96, 192, 384, 768 channels. Its base file
# (_base_/models/retinanet_fpn.py) is missing from the official repository; mmdet's RetinaNet
# R50-FPN base stands in for it (the LITv2-S RetinaNet config's model, neck and heads).
# Backbone: as the LITv2-S config (outputs 1-3 with nn.LayerNorm eps 1e-5, odd_merge='floor' to
# follow the official dense backbone at inputs that are not multiples of 32).
_base_ = './retinanet_litv2-s_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        arch='medium',
        drop_path_rate=0.2,
        init_cfg=dict(
            checkpoint='https://github.com/ziplab/LITv2/releases/download/v1.0/litv2_m.pth')),
    neck=dict(in_channels=[96, 192, 384, 768]))
