# RAVLT-T + RetinaNet, 1x schedule on COCO 2017: the RAVLT paper's detection recipe
# (reported: 45.9 box AP).
# Where the numbers come from: the official config, github.com/qhfan/RALA
# detection/configs/RALA/retinanet_t_1x.py (mmdet 2.x): ImageNet-1K weights, drop path 0.1,
# AdamW (lr 1e-4, weight decay 1e-4, no grad clipping), 12 epochs with the lr divided by 10
# after epochs 8 and 11 (schedule_1x), 8 GPUs x 2 images, FPN from stage 2 with extra convs
# on the input (mmdet's RetinaNet base already does both). The official backbone adds a
# LayerNorm2d to every output (out_norms=True). It trained with fp16 (loss scale 512):
# use `tools/train.py --amp` on a GPU for the same.
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
        type='RAVLT',
        arch='tiny',
        drop_path_rate=0.1,
        out_norms=True,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://huggingface.co/aldjalkdf/RAVLT/resolve/main/RAVLT_T.pth')),
    neck=dict(in_channels=[64, 128, 256, 512]))

optim_wrapper = dict(optimizer=dict(_delete_=True, type='AdamW', lr=1e-4, weight_decay=1e-4))
