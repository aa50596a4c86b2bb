# SHViT-S4 + UperNet, 160k iterations on ADE20K with 512x512 crops: OUR recipe (the SHViT
# paper and repository have detection recipes only). Swin's UperNet recipe as the other
# families' UperNet configs: AdamW (lr 6e-5, betas 0.9/0.999, weight decay 0.01, none on
# norms), linear warm-up over 1500 iterations from 1e-6 then poly (power 1) decay to 0, SyncBN
# in the heads, 8 GPUs x 2 images. The backbone as in the official detection recipes: its
# three stages (strides 16/32/64) as they are, BatchNorms in eval mode; UperNet's pyramid
# then starts at stride 16 (the auxiliary head on the stride-32 stage).
# Weights: the official ImageNet-1K checkpoint (GitHub release, converted on load).
_base_ = [
    'mmseg::_base_/models/upernet_r50.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_160k.py',
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
    decode_head=dict(in_channels=[224, 336, 448], in_index=[0, 1, 2], num_classes=150),
    auxiliary_head=dict(in_channels=336, in_index=1, num_classes=150))
train_dataloader = dict(batch_size=2)

optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(custom_keys=dict(norm=dict(decay_mult=0.))))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=1500, end=160000),
]
