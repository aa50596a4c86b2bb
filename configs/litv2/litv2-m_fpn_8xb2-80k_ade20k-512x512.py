# LITv2-M + Semantic FPN, 80k iterations on ADE20K with 512x512 crops (reported: 45.7 mIoU;
# released weights:
# https://github.com/ziplab/LITv2/releases/download/v1.0/litv2_m_fpn_r50_512x512_80k_ade20k.pth).
# Where the numbers come from: the official recipe (github.com/ziplab/LITv2,
# segmentation/configs/litv2/litv2_m_fpn_r50_512x512_80k_ade20k.py): the LITv2-S recipe with
# LITv2-M's ImageNet-1K weights, drop path 0.2 and the neck on 96, 192, 384, 768 channels.
# Backbone: as the LITv2-S config (all four outputs with nn.LayerNorm eps 1e-5,
# odd_merge='floor': whole-image testing feeds unpadded images, e.g. 512x683, whose merged maps
# are odd; the official dense backbone drops their last row/column).
_base_ = './litv2-s_fpn_8xb2-80k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        arch='medium',
        drop_path_rate=0.2,
        init_cfg=dict(
            checkpoint='https://github.com/ziplab/LITv2/releases/download/v1.0/litv2_m.pth')),
    neck=dict(in_channels=[96, 192, 384, 768]))
