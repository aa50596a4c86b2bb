# BiFormer-S + Mask R-CNN, 1x schedule on COCO 2017 (reported: 47.8 box AP / 43.2 mask AP).
# Where the numbers come from: the official recipe (github.com/rayleizhu/BiFormer,
# object_detection/configs/coco/maskrcnn.1x.biformer_small.py, which follows UniFormer):
# n_win 16 regions per side (any input size: each stage pads to a multiple of 16 inside the
# attention, as the official auto_pad), drop path 0.2, an extra LayerNorm2d on each of the 4
# outputs, BatchNorms in eval mode (norm_eval), AdamW (lr 1e-4, betas 0.9/0.999, weight decay
# 0.05, none on norms), 8 GPUs x 2 images, 12 epochs with the lr divided by 10 after epochs
# 8 and 11 (mmdet's schedule_1x). The official run used mixed precision (fp16).
# Weights: the official ImageNet-1K classification checkpoint (OneDrive, converted on load).
# Offline: download it from github.com/rayleizhu/BiFormer#imagenet-1k-trained-models and pass
# --cfg-options model.backbone.init_cfg.checkpoint=/path/to/biformer_small_best.pth
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
        type='BiFormer',
        arch='small',
        out_indices=(0, 1, 2, 3),
        out_norms=True,
        norm_eval=True,
        drop_path_rate=0.2,
        model_kwargs=dict(n_win=16),
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://api.onedrive.com/v1.0/shares/s!AkBbczdRlZvChHDyM-x9KWRBZ832/root/content')),
    neck=dict(in_channels=[64, 128, 256, 512]))

optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(custom_keys=dict(norm=dict(decay_mult=0.))))
