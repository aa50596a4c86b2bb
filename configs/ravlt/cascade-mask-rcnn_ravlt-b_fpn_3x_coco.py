# RAVLT-B + Cascade Mask R-CNN, 3x schedule on COCO 2017 (reported: 55.3 box AP / 47.7 mask AP).
# Where the numbers come from: the official config, github.com/qhfan/RALA
# detection/configs/RALA/casrcnn_m_3x.py (mmdet 2.x): the RAVLT-S recipe
# (cascade-mask-rcnn_ravlt-s_fpn_3x_coco.py: heads, optimizer, augmentation, schedule) with
# the base backbone, drop path 0.4 and the FPN on [96, 192, 384, 512].
# Weights: the official ImageNet-1K RAVLT-B checkpoint (Hugging Face, converted on load).
_base_ = './cascade-mask-rcnn_ravlt-s_fpn_3x_coco.py'

model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.4,
        init_cfg=dict(checkpoint='https://huggingface.co/aldjalkdf/RAVLT/resolve/main/RAVLT_B.pth')),
    neck=dict(in_channels=[96, 192, 384, 512]))
