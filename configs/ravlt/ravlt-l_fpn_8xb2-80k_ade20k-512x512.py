# RAVLT-L + Semantic FPN, 80k iterations on ADE20K with 512x512 crops (reported: 52.6 mIoU).
# Where the numbers come from: the official config, github.com/qhfan/RALA
# segmentation/configs/RALA/RALA_FPN_l_1x.py (mmseg 0.x): the RAVLT-T recipe
# (ravlt-t_fpn_8xb2-80k_ade20k-512x512.py: extra LayerNorm2d on every output, optimizer,
# schedule, test resize to 512 on the short side, whole-image inference) with the large
# backbone, drop path 0.55 and the FPN on [96, 192, 448, 640].
# Weights: the official ImageNet-1K RAVLT-L checkpoint (Hugging Face, converted on load).
_base_ = './ravlt-t_fpn_8xb2-80k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        arch='large',
        drop_path_rate=0.55,
        init_cfg=dict(checkpoint='https://huggingface.co/aldjalkdf/RAVLT/resolve/main/RAVLT_L.pth')),
    neck=dict(in_channels=[96, 192, 448, 640]))
