# BiFormer-S + Semantic FPN, 80k iterations on ADE20K with 512x512 crops (reported: 48.9 mIoU).
# Where the numbers come from: the official recipe (github.com/rayleizhu/BiFormer,
# semantic_segmentation/configs/ade20k/sfpn.biformer_small.py, which follows UniFormer's
# fpn_global_small): n_win 8 regions per side, drop path 0.15, an extra LayerNorm2d on each
# of the 4 outputs, SyncBN, AdamW (lr 2e-4, weight decay 1e-4), linear warm-up over 1000
# iterations (from 0.1 x lr) then cosine annealing to 1e-8 x lr, 8 GPUs x 4 images for 80k
# iterations (UniFormer's 160k at lr 1e-4 on 4 GPUs, halved in length and doubled in lr), test
# images resized to 512 on the short side and to a multiple of 32. The official run used fp16.
# Weights: the official ImageNet-1K classification checkpoint (see
# configs/biformer/mask-rcnn_biformer-s_fpn_1x_coco.py).
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
        type='BiFormer',
        arch='small',
        out_indices=(0, 1, 2, 3),
        out_norms=True,
        drop_path_rate=0.15,
        model_kwargs=dict(n_win=8),
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://api.onedrive.com/v1.0/shares/s!AkBbczdRlZvChHDyM-x9KWRBZ832/root/content')),
    neck=dict(in_channels=[64, 128, 256, 512]),
    decode_head=dict(num_classes=150))
# The backbone's BatchNorms become SyncBN in distributed runs, as in the official backbone.
sync_bn = 'torch'

test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 512), keep_ratio=True),
    dict(type='ResizeToMultiple', size_divisor=32),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(batch_size=4)
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

optim_wrapper = dict(optimizer=dict(_delete_=True, type='AdamW', lr=2e-4, weight_decay=1e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=1000),
    dict(type='CosineAnnealingLR', T_max=79000, eta_min_ratio=1e-8, by_epoch=False, begin=1000, end=80000),
]
