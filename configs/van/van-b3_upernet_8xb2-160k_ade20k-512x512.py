# VAN-B3 + UperNet, 160k iterations on ADE20K (reported: 50.6 mIoU, ms): the official recipe of
# van-b0_upernet_8xb2-160k_ade20k-512x512.py (see there for the sources) with the B3
# backbone (drop path 0.3) and its ImageNet-1K weights.
_base_ = './van-b0_upernet_8xb2-160k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        arch='b3',
        drop_path_rate=0.3,
        init_cfg=dict(
            checkpoint='https://huggingface.co/Visual-Attention-Network/VAN-Large-original/'
            'resolve/main/van_large_839.pth.tar')),
    decode_head=dict(in_channels=[64, 128, 320, 512]),
    auxiliary_head=dict(in_channels=320))
