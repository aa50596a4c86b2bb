# VAN-B0 + RetinaNet, 1x schedule on COCO 2017: the VAN paper's detection recipe.
# Where the numbers come from:
# - VAN paper (arXiv 2202.09741, Sec. 4.2 and its COCO table): RetinaNet 1x in mmdetection,
#   ImageNet-1K weights, "the same training/validating strategy" as PoolFormer;
# - PoolFormer's RetinaNet configs (github.com/sail-sg/poolformer, detection/configs, which
#   follow PVT): AdamW, lr 1e-4, weight decay 1e-4, 8 GPUs x 2 images, 12 epochs with the lr
#   divided by 10 after epochs 8 and 11 (mmdet's schedule_1x);
# - drop path 0.1 (B0-B2) and 0.3 (B3): the paper gives none for detection; these are the
#   official VAN-Segmentation UperNet values (github.com/Visual-Attention-Network/VAN-Segmentation).
# Weights: the official ImageNet-1K classification checkpoint (converted on load).
_base_ = [
    'mmdet::_base_/models/retinanet_r50_fpn.py',
    'mmdet::_base_/datasets/coco_detection.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['zoo.mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='VAN',
        arch='b0',
        drop_path_rate=0.1,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://huggingface.co/Visual-Attention-Network/VAN-Tiny-original/'
            'resolve/main/van_tiny_754.pth.tar')),
    neck=dict(in_channels=[32, 64, 160, 256]))

optim_wrapper = dict(optimizer=dict(_delete_=True, type='AdamW', lr=1e-4, weight_decay=1e-4))
