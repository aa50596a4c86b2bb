# RAVLT-T + Mask R-CNN, 1x schedule on COCO 2017: the RAVLT paper's instance-segmentation
# recipe (reported: 47.3 box AP / 42.7 mask AP).
# Where the numbers come from: the official config, github.com/qhfan/RALA
# detection/configs/RALA/maskrcnn_t_1x.py (mmdet 2.x): ImageNet-1K weights, drop path 0.1,
# AdamW (lr 1e-4, betas 0.9/0.999, weight decay 0.05, none on norms), 12 epochs with the lr
# divided by 10 after epochs 8 and 11, 8 GPUs x 2 images. The official backbone adds a
# LayerNorm2d to every output (out_norms=True). It trained with fp16: use
# `tools/train.py --amp` on a GPU for the same.
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
        type='RAVLT',
        arch='tiny',
        drop_path_rate=0.1,
        out_norms=True,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://huggingface.co/aldjalkdf/RAVLT/resolve/main/RAVLT_T.pth')),
    neck=dict(in_channels=[64, 128, 256, 512]))

optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(custom_keys=dict(norm=dict(decay_mult=0.))))
