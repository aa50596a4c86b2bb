# BiFormer-S + RetinaNet, 1x schedule on COCO 2017 (reported: 45.9 box AP).
# Where the numbers come from: the official recipe (github.com/rayleizhu/BiFormer,
# object_detection/configs/coco/retinanet.1x.biformer_small.py, which follows WaveViT):
# n_win 16 regions per side, drop path 0.2, an extra LayerNorm2d on each of the 4 outputs,
# BatchNorms in eval mode (norm_eval), FPN from the second output (start_level 1, extra convs
# on the input), AdamW (lr 1e-4, weight decay 1e-4), 8 GPUs x 2 images, 12 epochs with the lr
# divided by 10 after epochs 8 and 11 (mmdet's schedule_1x). The official run used fp16.
# Weights: the official ImageNet-1K classification checkpoint (see mask-rcnn_biformer-s_fpn_1x_coco.py).
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
    neck=dict(in_channels=[64, 128, 256, 512], start_level=1, add_extra_convs='on_input'))

optim_wrapper = dict(optimizer=dict(_delete_=True, type='AdamW', lr=1e-4, weight_decay=1e-4))
