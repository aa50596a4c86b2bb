# VAN-B2 + Semantic FPN, 40k iterations on ADE20K (reported: 46.7 mIoU): the official recipe of
# van-b0_fpn_8xb4-40k_ade20k-512x512.py (see there for the sources) with the B2
# backbone (drop path 0.2) and its ImageNet-1K weights.
_base_ = './van-b0_fpn_8xb4-40k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        arch='b2',
        drop_path_rate=0.2,
        init_cfg=dict(
            checkpoint='https://huggingface.co/Visual-Attention-Network/VAN-Base-original/'
            'resolve/main/van_base_828.pth.tar')),
    neck=dict(in_channels=[64, 128, 320, 512]))
