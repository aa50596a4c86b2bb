# VAN-B1 + Mask R-CNN, 1x on COCO: the recipe of mask-rcnn_van-b0_fpn_1x_coco.py (see
# there for the sources) with the B1 backbone (drop path 0.1) and its ImageNet-1K weights.
_base_ = './mask-rcnn_van-b0_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        arch='b1',
        drop_path_rate=0.1,
        init_cfg=dict(
            checkpoint='https://huggingface.co/Visual-Attention-Network/VAN-Small-original/'
            'resolve/main/van_small_811.pth.tar')),
    neck=dict(in_channels=[64, 128, 320, 512]))
