# RAVLT-S + RetinaNet, 1x schedule on COCO 2017 (reported: 48.3 box AP).
# Where the numbers come from: the official config, github.com/qhfan/RALA
# detection/configs/RALA/retinanet_s_1x.py (mmdet 2.x): the RAVLT-T recipe
# (retinanet_ravlt-t_fpn_1x_coco.py: extra LayerNorm2d on every output, optimizer,
# schedule, FPN from stage 2) with the small backbone, drop path 0.15 and the FPN on
# [64, 128, 320, 512].
# Weights: the official ImageNet-1K RAVLT-S checkpoint (Hugging Face, converted on load).
_base_ = './retinanet_ravlt-t_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        arch='small',
        drop_path_rate=0.15,
        init_cfg=dict(checkpoint='https://huggingface.co/aldjalkdf/RAVLT/resolve/main/RAVLT_S.pth')),
    neck=dict(in_channels=[64, 128, 320, 512]))
