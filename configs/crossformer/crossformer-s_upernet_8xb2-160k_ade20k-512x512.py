# CrossFormer-S + UperNet, 160k iterations on ADE20K with 512x512 crops (reported: 47.6 mIoU, 48.4 multi-scale).
# Where the numbers come from: the official recipe (github.com/cheerss/CrossFormer,
# segmentation/configs/crossformer/upernet_crossformer_s_ade20k.py, Swin's ADE20K pipeline):
# G = 7 and I = (8, 4, 2, 1) at every stage (the dense recipes' setting, also for
# CrossFormer++), drop path 0.2, the 4 stage outputs with no extra norm, SyncBN in the heads, AdamW (lr 6e-5, betas
# 0.9/0.999, weight decay 0.01, none on norms), linear warm-up over 1500 iterations (ratio 1e-6)
# then poly (power 1) decay to 0, 8 GPUs x 2 images, 160k iterations.
# The official config sets the auxiliary head's in_channels to 256 (its comment: "3rd
# in_channels of decode_head", which is 384 for CrossFormer-S); 384 is used here.
# Weights: the official ImageNet-1K classification checkpoint (crossformer-s.pth), on
# the Google Drive page https://drive.google.com/file/d/1RAkigsgr33va0RZ85S2Shs2BhXYcS6U8/view:
# no direct download. Save it as data/pretrained/crossformer-s.pth or pass
# --cfg-options model.backbone.init_cfg.checkpoint=/path/to/the/file (converted on load).
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
        type='CrossFormer',
        arch='small',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.2,
        model_kwargs=dict(group_size=7, interval=(8, 4, 2, 1)),
        init_cfg=dict(type='Pretrained', checkpoint='data/pretrained/crossformer-s.pth')),
    decode_head=dict(in_channels=[96, 192, 384, 768], num_classes=150),
    auxiliary_head=dict(in_channels=384, num_classes=150))

train_dataloader = dict(batch_size=2)

optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(custom_keys=dict(norm=dict(decay_mult=0.))))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=1500, end=160000),
]
