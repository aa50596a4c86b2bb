# LITv2-B + Semantic FPN, 80k iterations on ADE20K with 512x512 crops (reported: 47.2 mIoU;
# released weights:
# https://github.com/ziplab/LITv2/releases/download/v1.0/litv2_b_fpn_r50_512x512_80k_ade20k.pth).
# Where the numbers come from: the official recipe (github.com/ziplab/LITv2,
# segmentation/configs/litv2/litv2_b_fpn_r50_512x512_80k_ade20k.py): the LITv2-S recipe with
# LITv2-B's ImageNet-1K weights, drop path 0.3 and the neck on 128, 256, 512, 1024 channels.
# Backbone: as the LITv2-S config (all four outputs with nn.LayerNorm eps 1e-5,
# odd_merge='floor': whole-image testing feeds unpadded images, e.g. 512x683, whose merged maps
# are odd; the official dense backbone drops their last row/column).
_base_ = './litv2-s_fpn_8xb2-80k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.3,
        init_cfg=dict(
            checkpoint='https://github.com/ziplab/LITv2/releases/download/v1.0/litv2_b.pth')),
    neck=dict(in_channels=[128, 256, 512, 1024]))
