# RAVLT-B + RetinaNet, 1x schedule on COCO 2017 (reported: 49.8 box AP).
# Where the numbers come from: the official config, github.com/qhfan/RALA
# detection/configs/RALA/retinanet_m_1x.py (mmdet 2.x): the RAVLT-T recipe
# (retinanet_ravlt-t_fpn_1x_coco.py: extra LayerNorm2d on every output, optimizer,
# schedule, FPN from stage 2) with the base backbone, drop path 0.4 and the FPN on
# [96, 192, 384, 512].
# Weights: the official ImageNet-1K RAVLT-B checkpoint (Hugging Face, converted on load).
_base_ = './retinanet_ravlt-t_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.4,
        init_cfg=dict(checkpoint='https://huggingface.co/aldjalkdf/RAVLT/resolve/main/RAVLT_B.pth')),
    neck=dict(in_channels=[96, 192, 384, 512]))
