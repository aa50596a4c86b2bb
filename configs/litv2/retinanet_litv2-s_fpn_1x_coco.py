# LITv2-S + RetinaNet, 1x schedule on COCO 2017 (reported: 44.0 box AP).
# Where the numbers come from: the official recipe (github.com/ziplab/LITv2,
# detection/configs/litv2/retinanet_litv2_s_fpn_1x_coco.py): ImageNet-1K weights, drop path
# 0.2 (0.3 for LITv2-B), AdamW (lr 1e-4, weight decay 1e-4), 8 GPUs x 2 images, 12 epochs with
# the lr divided by 10 after epochs 8 and 11 (mmdet's schedule_1x), mixed precision (pass
# --amp on GPU). The official config's paramwise_cfg=dict({'norm': ...}) is not a valid
# custom_keys entry and had no effect, so no parameter is exempt from weight decay here either.
# Backbone outputs: all four stages, with an extra LayerNorm on outputs 1-3 (the official
# detection backbone's norm1..norm3, nn.LayerNorm with eps 1e-5; output 0 has none).
# odd_merge='floor': the merging layers treat odd maps as the official dense backbone does
# (no padding, floor(H / 2)), so the released detector weights (see model_cards/litv2.md)
# give the official outputs. With mmdet's pad_size_divisor=32 every merged map is even and
# 'floor' equals our default 'pad'; it only matters for inputs that are not multiples of 32.
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
        type='LITv2',
        arch='small',
        out_indices=(0, 1, 2, 3),
        out_norms=(False, True, True, True),
        out_norm_eps=1e-5,
        model_kwargs=dict(odd_merge='floor'),
        drop_path_rate=0.2,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://github.com/ziplab/LITv2/releases/download/v1.0/litv2_s.pth')),
    neck=dict(in_channels=[96, 192, 384, 768]))

optim_wrapper = dict(optimizer=dict(_delete_=True, type='AdamW', lr=1e-4, weight_decay=1e-4))
