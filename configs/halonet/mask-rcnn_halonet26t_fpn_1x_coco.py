# HaloNet-26T + Mask R-CNN, 1x schedule on COCO 2017: OUR recipe, not the paper's.
# The HaloNet paper (arXiv 2103.12731) reports no instance segmentation with these
# ResNet-style hybrids, so this is mmdet's own ResNet-50 recipe
# (configs/mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py) with the backbone swapped: SGD lr 0.02,
# momentum 0.9, weight decay 1e-4, 8 GPUs x 2 images, 12 epochs with the lr divided by 10
# after epochs 8 and 11, the stem and first stage frozen and BatchNorm statistics kept in
# eval mode (frozen_stages=1, norm_eval=True), as mmdet does for ResNets; no drop path.
# Weights: timm's ImageNet-1K training (halonet26t.a1h_in1k), from timm's release files.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['zoo.mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='HaloNet',
        arch='halonet26t',
        frozen_stages=1,
        norm_eval=True,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://github.com/rwightman/pytorch-image-models/releases/download/'
            'v0.1-attn-weights/halonet26t_a1h_256-3083328c.pth')),
    neck=dict(in_channels=[256, 512, 1024, 2048]))

optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.02, momentum=0.9, weight_decay=0.0001))
