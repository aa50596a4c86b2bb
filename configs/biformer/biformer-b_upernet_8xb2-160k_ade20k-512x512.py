# BiFormer-B + UperNet, 160k iterations on ADE20K with 512x512 crops (reported: 51.0 mIoU,
# 51.7 multi-scale).
# Where the numbers come from: the official recipe (github.com/rayleizhu/BiFormer,
# semantic_segmentation/configs/ade20k/upernet.biformer_base.py): the BiFormer-S recipe
# (biformer-s_upernet_8xb2-160k_ade20k-512x512.py: n_win 8, an extra LayerNorm2d on each of
# the 4 outputs, optimizer, schedule, test resize to 512 on the short side) with the base
# backbone, drop path 0.4, the UperNet head on [96, 192, 384, 768] and the auxiliary head on
# the 384-channel third output.
# Weights: the official ImageNet-1K BiFormer-B checkpoint (OneDrive, converted on load).
_base_ = './biformer-s_upernet_8xb2-160k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.4,
        init_cfg=dict(checkpoint='https://api.onedrive.com/v1.0/shares/s!AkBbczdRlZvChHI_XPhoadjaNxtO/root/content')),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))
