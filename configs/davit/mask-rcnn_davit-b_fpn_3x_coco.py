# DaViT-B + Mask R-CNN, 3x schedule on COCO 2017 (reported 49.9 box AP, 44.6 mask AP): the
# recipe of mask-rcnn_davit-t_fpn_3x_coco.py (see there and the 1x config for the sources) with
# the DaViT-B backbone (depths 1/1/9/1, widths 128-1024) and its ImageNet-1K weights. The
# official repository (github.com/dingmyu/davit) ships configs for DaViT-T only; its README
# releases the DaViT-B detector trained with the same recipe, so only the backbone and the
# FPN's input widths change.
_base_ = './mask-rcnn_davit-t_fpn_3x_coco.py'

model = dict(
    backbone=dict(
        arch='base',
        init_cfg=dict(
            checkpoint='https://huggingface.co/timm/davit_base.msft_in1k/resolve/main/model.safetensors')),
    neck=dict(in_channels=[128, 256, 512, 1024]))
