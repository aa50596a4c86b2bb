# VAN-B5 (ImageNet-22K) + UperNet, 160k iterations on ADE20K (reported: 53.9 mIoU, ms): the
# official recipe of van-b0_upernet_8xb2-160k_ade20k-512x512.py (see there for the sources)
# with the B5 backbone (widths 96/192/480/768, depths 3/3/24/3, drop path 0.4) and its
# ImageNet-22K weights (the file the official config starts from, on the official Tsinghua
# Cloud folder), 8 GPUs x 2 images
# (configs/upernet/22k_pretrained/upernet_van_b5_512x512_160k_ade20k_22k.py).
_base_ = './van-b0_upernet_8xb2-160k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        arch='b5',
        drop_path_rate=0.4,
        init_cfg=dict(checkpoint='https://cloud.tsinghua.edu.cn/d/0100f0cea37d41ba8d08/files/?p=%2Fvan_b5_22k.pth&dl=1')),
    decode_head=dict(in_channels=[96, 192, 480, 768]),
    auxiliary_head=dict(in_channels=480))
