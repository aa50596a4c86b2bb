# VAN-B4 + Semantic FPN, 40k iterations on ADE20K: the official recipe of
# van-b0_fpn_8xb4-40k_ade20k-512x512.py (see there for the sources) with the B4 backbone (drop
# path 0.4, configs/sem_fpn/fpn_van_b4_ade20k_40k.py) and its ImageNet-1K weights (the file the
# official config starts from, on the official Tsinghua Cloud folder). VAN-Segmentation's
# README reports no result and releases no weights for this recipe.
_base_ = './van-b0_fpn_8xb4-40k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        arch='b4',
        drop_path_rate=0.4,
        init_cfg=dict(checkpoint='https://cloud.tsinghua.edu.cn/d/0100f0cea37d41ba8d08/files/?p=%2Fvan_b4.pth&dl=1')),
    neck=dict(in_channels=[64, 128, 320, 512]))
