# BiFormer-B + Semantic FPN, 80k iterations on ADE20K with 512x512 crops (reported: 49.9 mIoU).
# Where the numbers come from: the official recipe (github.com/rayleizhu/BiFormer,
# semantic_segmentation/configs/ade20k/sfpn.biformer_base.py): the BiFormer-S recipe
# (biformer-s_fpn_8xb4-80k_ade20k-512x512.py: n_win 8, an extra LayerNorm2d on each of the
# 4 outputs, optimizer, schedule, test resize to 512 on the short side and to a multiple of
# 32) with the base backbone, drop path 0.3 and the FPN on [96, 192, 384, 768].
# Weights: the official ImageNet-1K BiFormer-B checkpoint (OneDrive, converted on load).
_base_ = './biformer-s_fpn_8xb4-80k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.3,
        init_cfg=dict(checkpoint='https://api.onedrive.com/v1.0/shares/s!AkBbczdRlZvChHI_XPhoadjaNxtO/root/content')),
    neck=dict(in_channels=[96, 192, 384, 768]))
