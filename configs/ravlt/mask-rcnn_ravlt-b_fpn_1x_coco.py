# RAVLT-B + Mask R-CNN, 1x schedule on COCO 2017 (reported: 51.2 box AP / 45.7 mask AP).
# Where the numbers come from: the official config, github.com/qhfan/RALA
# detection/configs/RALA/maskrcnn_m_1x.py (mmdet 2.x): the RAVLT-T recipe
# (mask-rcnn_ravlt-t_fpn_1x_coco.py: extra LayerNorm2d on every output, optimizer,
# schedule) with the base backbone, drop path 0.4 and the FPN on [96, 192, 384, 512].
# Weights: the official ImageNet-1K RAVLT-B checkpoint (Hugging Face, converted on load).
_base_ = './mask-rcnn_ravlt-t_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.4,
        init_cfg=dict(checkpoint='https://huggingface.co/aldjalkdf/RAVLT/resolve/main/RAVLT_B.pth')),
    neck=dict(in_channels=[96, 192, 384, 512]))
