# CrossFormer-S + Semantic FPN, 80k iterations on ADE20K with 512x512 crops (reported: 46.4 mIoU).
# Where the numbers come from: the official recipe (github.com/cheerss/CrossFormer,
# segmentation/configs/crossformer/fpn_crossformer_s_ade20k_40k.py, which despite its name runs
# 80k iterations): G = 7 and I = (8, 4, 2, 1) at every stage (the dense recipes' setting, also for
# CrossFormer++), drop path 0.2, the 4 stage outputs with no extra norm,
# SyncBN in the head, AdamW (lr 1e-4, weight decay 1e-4), poly (power 0.9) decay to 0 with no
# warm-up, 8 GPUs x 4 images.
# Weights: the official ImageNet-1K classification checkpoint (crossformer-s.pth), on
# the Google Drive page https://drive.google.com/file/d/1RAkigsgr33va0RZ85S2Shs2BhXYcS6U8/view:
# no direct download. Save it as data/pretrained/crossformer-s.pth or pass
# --cfg-options model.backbone.init_cfg.checkpoint=/path/to/the/file (converted on load).
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
        type='CrossFormer',
        arch='small',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.2,
        model_kwargs=dict(group_size=7, interval=(8, 4, 2, 1)),
        init_cfg=dict(type='Pretrained', checkpoint='data/pretrained/crossformer-s.pth')),
    neck=dict(in_channels=[96, 192, 384, 768]),
    decode_head=dict(num_classes=150))

train_dataloader = dict(batch_size=4)

optim_wrapper = dict(optimizer=dict(_delete_=True, type='AdamW', lr=1e-4, weight_decay=1e-4))
param_scheduler = [dict(type='PolyLR', power=0.9, eta_min=0.0, by_epoch=False, begin=0, end=80000)]
