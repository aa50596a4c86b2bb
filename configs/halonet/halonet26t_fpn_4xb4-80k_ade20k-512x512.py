# HaloNet-26T + Semantic FPN, 80k iterations on ADE20K with 512x512 crops: OUR recipe, not the
# paper's (the HaloNet paper reports no semantic segmentation). mmseg's own ResNet-50 Semantic
# FPN recipe (configs/sem_fpn/fpn_r50_4xb4-160k_ade20k-512x512.py) with the backbone swapped,
# on the 80k schedule that the PVT-era papers (and the other families here) use: SyncBN in
# the backbone and the head, SGD lr 0.01, momentum 0.9, weight decay 5e-4, poly decay (power
# 0.9) to 1e-4, 4 GPUs x 4 images; no drop path.
# Weights: timm's ImageNet-1K training (halonet26t.a1h_in1k), from timm's release files.
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
        type='HaloNet',
        arch='halonet26t',
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://github.com/rwightman/pytorch-image-models/releases/download/'
            'v0.1-attn-weights/halonet26t_a1h_256-3083328c.pth')),
    neck=dict(in_channels=[256, 512, 1024, 2048]),
    decode_head=dict(num_classes=150))
# The backbone's BatchNorms become SyncBN in distributed runs, as mmseg's ResNet-50 uses.
sync_bn = 'torch'

optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0005))
