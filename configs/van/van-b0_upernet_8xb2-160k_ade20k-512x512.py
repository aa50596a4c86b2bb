# VAN-B0 + UperNet, 160k iterations on ADE20K with 512x512 crops (reported: 41.1 mIoU, ms).
# Where the numbers come from: the official recipe, VAN-Segmentation
# (github.com/Visual-Attention-Network/VAN-Segmentation,
# configs/upernet/1k_pretrained/upernet_van_b0_512x512_160k_ade20k.py; ported to mmseg 1.x as
# mmsegmentation's projects/van): ImageNet-1K weights, drop path 0.1 (0.3 for B3), SyncBN in
# the backbone and the heads, AdamW (lr 6e-5, betas 0.9/0.999, weight decay 0.01, none on
# norms), linear warm-up over 1500 iterations then poly (power 1) decay to 0, 8 GPUs x 2
# images, test images resized to 512 on the short side and to a multiple of 32 (single
# scale; the published UperNet results are multi-scale with flip: tta_pipeline below).
# The official backbone's LayerNorms use eps 1e-5 (the classification models: 1e-6).
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
        type='VAN',
        arch='b0',
        drop_path_rate=0.1,
        model_kwargs=dict(norm_eps=1e-5),
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://huggingface.co/Visual-Attention-Network/VAN-Tiny-original/'
            'resolve/main/van_tiny_754.pth.tar')),
    decode_head=dict(in_channels=[32, 64, 160, 256], num_classes=150),
    auxiliary_head=dict(in_channels=160, num_classes=150))
# The backbone's BatchNorms become SyncBN in distributed runs, as in the official backbone.
sync_bn = 'torch'

test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 512), keep_ratio=True),
    dict(type='ResizeToMultiple', size_divisor=32),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
# mmseg 0.x's --aug-test (the README's "ms" results): MultiScaleFlipAug scaled the target size
# (2048, 512) by each ratio, with flip; run it through mmseg's test-time augmentation
# (tta_model, SegTTAModel), which tools/test.py does not switch on.
img_ratios = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
tta_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(
        type='TestTimeAug',
        transforms=[
            [dict(type='Resize', scale=(int(2048 * r), int(512 * r)), keep_ratio=True) for r in img_ratios],
            [dict(type='ResizeToMultiple', size_divisor=32)],
            [dict(type='RandomFlip', prob=0., direction='horizontal'),
             dict(type='RandomFlip', prob=1., direction='horizontal')],
            [dict(type='LoadAnnotations', reduce_zero_label=True)],
            [dict(type='PackSegInputs')],
        ]),
]
train_dataloader = dict(batch_size=2)
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

# The official optimizer also exempts Swin's position tables from weight decay; VAN has none.
optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(custom_keys=dict(norm=dict(decay_mult=0.))))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=1500, end=160000),
]
