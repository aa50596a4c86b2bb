# CrossFormer-S + UperNet, 160k iterations on ADE20K with 512x512 crops (reported: 47.6 mIoU, 48.4 multi-scale).
# Where the numbers come from: the official recipe of the original release (github.com/cheerss/
# CrossFormer, branch crossformer: segmentation/configs/upernet_crossformer_s_ade20k.py, Swin's
# ADE20K pipeline, and segmentation/crossformer_factory.py): G = 7 and I = (8, 4, 2, 1) at every
# stage (the dense recipes' setting, also for CrossFormer++), the v1 long-distance grouping
# (lda_grouping='v1': the branch's models/crossformer_backbone.py; see the model card), drop path
# 0.2, the 4 stage outputs with no extra norm, SyncBN in the heads, AdamW (lr 6e-5, betas
# 0.9/0.999, weight decay 0.01, none on norms), linear warm-up over 1500 iterations (ratio 1e-6)
# then poly (power 1) decay to 0, 8 GPUs x 2 images, 160k iterations. The auxiliary head reads
# the third output (384 channels; the copy of the config on branch main says 256).
# Test: whole image, resized to fit 2048 x 512 keeping the aspect ratio, then resized to a
# multiple of 32 (the official AlignResize). The official test pipeline
# (segmentation/configs/_base_/datasets/ade20k_swin.py) has its multi-scale ratios switched on
# although its comment says to uncomment them: tools/test.py runs the single-scale pipeline
# below (the README's mIoU column); tta_pipeline holds the official multi-scale one (the
# official ratios, no flip) for mmseg's test-time augmentation (tta_model, SegTTAModel), which
# tools/test.py does not switch on.
# Weights: the official ImageNet-1K classification checkpoint (crossformer-s.pth), on
# the Google Drive page https://drive.google.com/file/d/1RAkigsgr33va0RZ85S2Shs2BhXYcS6U8/view:
# no direct download. Save it as data/pretrained/crossformer-s.pth or pass
# --cfg-options model.backbone.init_cfg.checkpoint=/path/to/the/file (converted on load).
# Released segmenter: model card "Released dense weights" (load_from= with tools/test.py).
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
        model_kwargs=dict(group_size=7, interval=(8, 4, 2, 1), lda_grouping='v1'),
        init_cfg=dict(type='Pretrained', checkpoint='data/pretrained/crossformer-s.pth')),
    decode_head=dict(in_channels=[96, 192, 384, 768], num_classes=150),
    auxiliary_head=dict(in_channels=384, num_classes=150),
    test_cfg=dict(mode='whole'))

test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 512), keep_ratio=True),
    dict(type='ResizeToMultiple', size_divisor=32),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
# mmseg 0.x's MultiScaleFlipAug scaled the target size (2048, 512) by each ratio.
img_ratios = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
tta_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(
        type='TestTimeAug',
        transforms=[
            [dict(type='Resize', scale=(int(2048 * r), int(512 * r)), keep_ratio=True) for r in img_ratios],
            [dict(type='ResizeToMultiple', size_divisor=32)],
            [dict(type='LoadAnnotations', reduce_zero_label=True)],
            [dict(type='PackSegInputs')],
        ]),
]
train_dataloader = dict(batch_size=2)
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(custom_keys=dict(norm=dict(decay_mult=0.))))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=1500, end=160000),
]
