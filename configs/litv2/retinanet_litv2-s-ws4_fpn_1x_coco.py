# LITv2-S + RetinaNet with HiLo window size 4, 1x schedule on COCO 2017 (reported: 43.7 box AP;
# released weights:
# https://github.com/ziplab/LITv2/releases/download/v1.0/retinanet_litv2_s_fpn_1x_coco_ws_4.pth).
# Where the numbers come from: the official recipe (github.com/ziplab/LITv2,
# detection/configs/litv2/retinanet_litv2_s_fpn_1x_coco_ws_4.py): the window-size-2 recipe with
# local_ws=[0, 0, 4, 1] (stage 3's hi-fi windows and lo-fi pooling are 4x4; the same
# ImageNet-1K weights, trained at ws 2: no parameter depends on the window size).
# Backbone: as the window-size-2 config (outputs 1-3 with nn.LayerNorm eps 1e-5,
# odd_merge='floor'); HiLo pads stage 3 to a multiple of 4 as the official backbone does.
_base_ = './retinanet_litv2-s_fpn_1x_coco.py'

model = dict(backbone=dict(model_kwargs=dict(local_ws=(0, 0, 4, 1))))
