# RAVLT-B + Semantic FPN, 80k iterations on ADE20K with 512x512 crops (reported: 51.9 mIoU).
# Where the numbers come from: the official config, github.com/qhfan/RALA
# segmentation/configs/RALA/RALA_FPN_b_1x.py (mmseg 0.x): the RAVLT-T recipe
# (ravlt-t_fpn_8xb2-80k_ade20k-512x512.py: extra LayerNorm2d on every output, optimizer,
# schedule, test resize to 512 on the short side, whole-image inference) with the base
# backbone, drop path 0.4 and the FPN on [96, 192, 384, 512].
# Weights: the official ImageNet-1K RAVLT-B checkpoint (Hugging Face, converted on load).
_base_ = './ravlt-t_fpn_8xb2-80k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.4,
        init_cfg=dict(checkpoint='https://huggingface.co/aldjalkdf/RAVLT/resolve/main/RAVLT_B.pth')),
    neck=dict(in_channels=[96, 192, 384, 512]))
