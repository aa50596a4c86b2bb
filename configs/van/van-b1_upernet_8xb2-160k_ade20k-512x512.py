# VAN-B1 + UperNet, 160k iterations on ADE20K (reported: 44.9 mIoU, ms): the official recipe of
# van-b0_upernet_8xb2-160k_ade20k-512x512.py (see there for the sources) with the B1
# backbone (drop path 0.1) and its ImageNet-1K weights.
_base_ = './van-b0_upernet_8xb2-160k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        arch='b1',
        drop_path_rate=0.1,
        init_cfg=dict(
            checkpoint='https://huggingface.co/Visual-Attention-Network/VAN-Small-original/'
            'resolve/main/van_small_811.pth.tar')),
    decode_head=dict(in_channels=[64, 128, 320, 512]),
    auxiliary_head=dict(in_channels=320))
