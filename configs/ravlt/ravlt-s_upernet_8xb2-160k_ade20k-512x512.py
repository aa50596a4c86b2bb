# RAVLT-S + UperNet, 160k iterations on ADE20K with 512x512 crops (reported: 50.7 mIoU).
# Where the numbers come from: the official config, github.com/qhfan/RALA
# segmentation/configs/RALA/RALA_Uper_s_2x.py (which follows UniFormer's and CSWin's
# UperNet recipes): ImageNet-1K weights, drop path 0.15, SyncBN in the heads, AdamW (lr 6e-5,
# betas 0.9/0.999, weight decay 0.01, none on norms), linear warm-up over 1500 iterations
# from 1e-6 then poly (power 1) decay to 0, 8 GPUs x 2 images, fp16 (loss scale 512), test
# images resized to 512 on the short side. The official backbone adds a LayerNorm2d to every
# output (out_norms=True). The official repo has no tiny UperNet recipe.
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
        type='RAVLT',
        arch='small',
        drop_path_rate=0.15,
        out_norms=True,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://huggingface.co/aldjalkdf/RAVLT/resolve/main/RAVLT_S.pth')),
    decode_head=dict(in_channels=[64, 128, 320, 512], num_classes=150),
    auxiliary_head=dict(in_channels=320, num_classes=150))
# The backbone's BatchNorms become SyncBN in distributed runs, as in the official backbone.
sync_bn = 'torch'
train_dataloader = dict(batch_size=2)

optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(custom_keys=dict(norm=dict(decay_mult=0.))))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=1500, end=160000),
]
