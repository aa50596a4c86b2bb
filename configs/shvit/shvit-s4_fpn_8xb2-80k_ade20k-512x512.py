# SHViT-S4 + Semantic FPN, 80k iterations on ADE20K with 512x512 crops: OUR recipe (the SHViT
# paper and repository have detection recipes only). PVT's Semantic FPN recipe as the other
# families' Semantic FPN configs: AdamW (lr 1e-4, weight decay 1e-4), poly (power 0.9) decay
# to 0, 8 GPUs x 2 images for 80k iterations. The backbone as in the official detection
# recipes: its three stages (strides 16/32/64) as they are, BatchNorms in eval mode; the FPN
# and its head work on those three levels.
# Weights: the official ImageNet-1K checkpoint (GitHub release, converted on load).
_base_ = [
    'mmseg::_base_/models/fpn_r50.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_80k.py',
]
custom_imports = dict(imports=['zoo.mm'], allow_failed_imports=False)

crop_size = (512, 512)
model = dict(
    data_preprocessor=dict(size=crop_size),
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='SHViT',
        arch='s4',
        out_indices=(0, 1, 2),
        norm_eval=True,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://github.com/ysj9909/SHViT/releases/download/v1.0/shvit_s4.pth')),
    neck=dict(in_channels=[224, 336, 448], num_outs=3),
    decode_head=dict(in_channels=[256, 256, 256], in_index=[0, 1, 2], feature_strides=[16, 32, 64],
                     num_classes=150))
train_dataloader = dict(batch_size=2)

optim_wrapper = dict(optimizer=dict(_delete_=True, type='AdamW', lr=1e-4, weight_decay=1e-4))
param_scheduler = [
    dict(type='PolyLR', power=0.9, eta_min=0.0, by_epoch=False, begin=0, end=80000),
]
