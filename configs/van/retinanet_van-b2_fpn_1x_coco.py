# VAN-B2 + RetinaNet, 1x on COCO: the recipe of retinanet_van-b0_fpn_1x_coco.py (see
# there for the sources) with the B2 backbone (drop path 0.1) and its ImageNet-1K weights.
_base_ = './retinanet_van-b0_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        arch='b2',
        drop_path_rate=0.1,
        init_cfg=dict(
            checkpoint='https://huggingface.co/Visual-Attention-Network/VAN-Base-original/'
            'resolve/main/van_base_828.pth.tar')),
    neck=dict(in_channels=[64, 128, 320, 512]))
