# VAN-B0 + Semantic FPN, 40k iterations on ADE20K with 512x512 crops (reported: 38.5 mIoU).
# Where the numbers come from: the official recipe, VAN-Segmentation
# (github.com/Visual-Attention-Network/VAN-Segmentation, configs/sem_fpn/fpn_van_b0_ade20k_40k.py,
# which inherits fpn_van_b2_ade20k_40k.py; ported to mmseg 1.x as mmsegmentation's
# projects/van): ImageNet-1K weights, drop path 0.2 (0.3 for B3), SyncBN in the backbone and
# the head, AdamW (lr 2e-4, weight decay 1e-4), poly (power 0.9) decay to 0, 8 GPUs x 4
# images for 40k iterations (the official config's note: 80k iterations at lr 1e-4 on 4 GPUs,
# halved in length and doubled in lr for 8 GPUs), test images resized to 512 on the short
# side and to a multiple of 32.
# The official backbone's LayerNorms use eps 1e-5 (the classification models: 1e-6).
_base_ = [
    'mmseg::_base_/models/fpn_r50.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_40k.py',
]
custom_imports = dict(imports=['zoo.mm'], allow_failed_imports=False)

crop_size = (512, 512)
model = dict(
    data_preprocessor=dict(size=crop_size),
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='VAN',
        arch='b0',
        drop_path_rate=0.2,
        model_kwargs=dict(norm_eps=1e-5),
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://huggingface.co/Visual-Attention-Network/VAN-Tiny-original/'
            'resolve/main/van_tiny_754.pth.tar')),
    neck=dict(in_channels=[32, 64, 160, 256]),
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
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

optim_wrapper = dict(optimizer=dict(_delete_=True, type='AdamW', lr=2e-4, weight_decay=1e-4))
param_scheduler = [
    dict(type='PolyLR', power=0.9, eta_min=0.0, by_epoch=False, begin=0, end=40000),
]
