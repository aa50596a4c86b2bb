# BiFormer-B + Mask R-CNN, 1x schedule on COCO 2017 (reported: 48.6 box AP / 43.7 mask AP).
# Where the numbers come from: the official recipe (github.com/rayleizhu/BiFormer,
# object_detection/configs/coco/maskrcnn.1x.biformer_base.py): the BiFormer-S recipe
# (mask-rcnn_biformer-s_fpn_1x_coco.py: n_win 16, an extra LayerNorm2d on each of the 4
# outputs, norm_eval, optimizer and schedule) with the base backbone, drop path 0.3 and the
# FPN on [96, 192, 384, 768].
# Weights: the official ImageNet-1K BiFormer-B checkpoint (OneDrive, converted on load).
_base_ = './mask-rcnn_biformer-s_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.3,
        init_cfg=dict(checkpoint='https://api.onedrive.com/v1.0/shares/s!AkBbczdRlZvChHI_XPhoadjaNxtO/root/content')),
    neck=dict(in_channels=[96, 192, 384, 768]))
