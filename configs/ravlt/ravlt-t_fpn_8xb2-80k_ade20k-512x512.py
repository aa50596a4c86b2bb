# RAVLT-T + Semantic FPN on ADE20K with 512x512 crops (reported: 47.9 mIoU).
# Where the numbers come from: the official recipe, github.com/qhfan/RALA
# segmentation/configs/RALA/RALA_FPN_s_1x.py (the official repo ships the small/base/large
# files; tiny is the same recipe with the tiny backbone of configs/_base_/models/RALA_fpn.PY,
# drop path 0.1): ImageNet-1K weights, SyncBN in the head, AdamW (lr 1e-4, weight decay 1e-4),
# poly (power 0.9) decay to 1e-6 over 80k iterations, 8 GPUs x 2 images, test images resized
# to 512 on the short side (no size multiple needed: RAVLT takes any size). The official
# backbone adds a LayerNorm2d to every output (out_norms=True).
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
        type='RAVLT',
        arch='tiny',
        drop_path_rate=0.1,
        out_norms=True,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://huggingface.co/aldjalkdf/RAVLT/resolve/main/RAVLT_T.pth')),
    neck=dict(in_channels=[64, 128, 256, 512]),
    decode_head=dict(num_classes=150))
# The backbone's BatchNorms become SyncBN in distributed runs, as in the official backbone.
sync_bn = 'torch'
train_dataloader = dict(batch_size=2)

optim_wrapper = dict(optimizer=dict(_delete_=True, type='AdamW', lr=1e-4, weight_decay=1e-4))
param_scheduler = [
    dict(type='PolyLR', power=0.9, eta_min=1e-6, by_epoch=False, begin=0, end=80000),
]
