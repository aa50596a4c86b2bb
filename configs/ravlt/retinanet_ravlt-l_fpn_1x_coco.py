# RAVLT-L + RetinaNet, 1x schedule on COCO 2017 (reported: 50.9 box AP).
# Where the numbers come from: the official config, github.com/qhfan/RALA
# detection/configs/RALA/retinanet_l_1x.py (mmdet 2.x): the RAVLT-T recipe
# (retinanet_ravlt-t_fpn_1x_coco.py: extra LayerNorm2d on every output, optimizer,
# schedule, FPN from stage 2) with the large backbone, drop path 0.55 and the FPN on
# [96, 192, 448, 640].
# Weights: the official ImageNet-1K RAVLT-L checkpoint (Hugging Face, converted on load).
_base_ = './retinanet_ravlt-t_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        arch='large',
        drop_path_rate=0.55,
        init_cfg=dict(checkpoint='https://huggingface.co/aldjalkdf/RAVLT/resolve/main/RAVLT_L.pth')),
    neck=dict(in_channels=[96, 192, 448, 640]))
