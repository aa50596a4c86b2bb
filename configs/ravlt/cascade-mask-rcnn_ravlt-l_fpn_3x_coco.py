# RAVLT-L + Cascade Mask R-CNN, 3x schedule on COCO 2017 (reported: 55.6 box AP / 48.0 mask AP).
# Where the numbers come from: the official config, github.com/qhfan/RALA
# detection/configs/RALA/casrcnn_l_3x.py (mmdet 2.x): the RAVLT-S recipe
# (cascade-mask-rcnn_ravlt-s_fpn_3x_coco.py: heads, optimizer, augmentation, schedule) with
# the large backbone, drop path 0.55 and the FPN on [96, 192, 448, 640].
# Weights: the official ImageNet-1K RAVLT-L checkpoint (Hugging Face, converted on load).
_base_ = './cascade-mask-rcnn_ravlt-s_fpn_3x_coco.py'

model = dict(
    backbone=dict(
        arch='large',
        drop_path_rate=0.55,
        init_cfg=dict(checkpoint='https://huggingface.co/aldjalkdf/RAVLT/resolve/main/RAVLT_L.pth')),
    neck=dict(in_channels=[96, 192, 448, 640]))
