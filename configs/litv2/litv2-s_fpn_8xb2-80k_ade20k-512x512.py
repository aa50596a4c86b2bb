# LITv2-S + Semantic FPN, 80k iterations on ADE20K with 512x512 crops (reported: 44.3 mIoU).
# Where the numbers come from: the official recipe (github.com/ziplab/LITv2,
# segmentation/configs/litv2/litv2_s_fpn_r50_512x512_80k_ade20k.py and its mmseg 0.x bases):
# ImageNet-1K weights, drop path 0.2 (0.3 for LITv2-B), AdamW (lr 1e-4, weight decay 1e-4),
# poly (power 0.9) decay to 1e-6, 8 GPUs x 2 images for 80k iterations, SyncBN in the head
# (the backbone's BatchNorms stay plain BN, as in the official backbone), test images
# resized to 512 on the short side.
# Backbone outputs: all four stages, each with an extra LayerNorm (the official segmentation
# backbone's norm0..norm3, nn.LayerNorm with eps 1e-5).
# odd_merge='floor': the merging layers treat odd maps as the official dense backbone does
# (no padding, floor(H / 2)). Whole-image testing feeds unpadded images (e.g. 512x683: stage
# maps 128x171, 64x85, 32x42, 16x21 instead of our default's 64x86, 32x43, 16x22), so the
# released segmentor weights (see model_cards/litv2.md) need it to give the official outputs.
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
        type='LITv2',
        arch='small',
        out_indices=(0, 1, 2, 3),
        out_norms=True,
        out_norm_eps=1e-5,
        model_kwargs=dict(odd_merge='floor'),
        drop_path_rate=0.2,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://github.com/ziplab/LITv2/releases/download/v1.0/litv2_s.pth')),
    neck=dict(in_channels=[96, 192, 384, 768]),
    decode_head=dict(num_classes=150))

train_dataloader = dict(batch_size=2)

optim_wrapper = dict(optimizer=dict(_delete_=True, type='AdamW', lr=1e-4, weight_decay=1e-4))
param_scheduler = [
    dict(type='PolyLR', power=0.9, eta_min=1e-6, by_epoch=False, begin=0, end=80000),
]
