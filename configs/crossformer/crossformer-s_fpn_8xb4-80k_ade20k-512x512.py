# CrossFormer-S + Semantic FPN, 80k iterations on ADE20K with 512x512 crops (reported: 46.4 mIoU).
# Where the numbers come from: the official recipe of the original release (github.com/cheerss/
# CrossFormer, branch crossformer: segmentation/configs/fpn_crossformer_s_ade20k_40k.py, which
# despite its name runs 80k iterations, and segmentation/crossformer_factory.py): G = (14, 14, 7, 7)
# and I = (16, 8, 2, 1) (the copy of the config on branch main says G = 7 and I = (8, 4, 2, 1),
# but the released segmenter predates it), the v1 long-distance grouping (lda_grouping='v1': the
# branch's models/crossformer_backbone.py; see the model card), drop path 0.2, the 4 stage
# outputs with no extra norm, SyncBN in the head, AdamW (lr 1e-4, weight decay 1e-4), poly
# (power 0.9) decay to 0 with no warm-up, 8 GPUs x 4 images. Test: whole image, resized to fit
# 2048 x 512 keeping the aspect ratio, then resized to a multiple of 32 (the official
# AlignResize, segmentation/align_resize.py).
# Weights: the official ImageNet-1K classification checkpoint (crossformer-s.pth), on
# the Google Drive page https://drive.google.com/file/d/1RAkigsgr33va0RZ85S2Shs2BhXYcS6U8/view:
# no direct download. Save it as data/pretrained/crossformer-s.pth or pass
# --cfg-options model.backbone.init_cfg.checkpoint=/path/to/the/file (converted on load).
# Released segmenter: model card "Released dense weights" (load_from= with tools/test.py).
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
        model_kwargs=dict(group_size=(14, 14, 7, 7), interval=(16, 8, 2, 1), lda_grouping='v1'),
        init_cfg=dict(type='Pretrained', checkpoint='data/pretrained/crossformer-s.pth')),
    neck=dict(in_channels=[96, 192, 384, 768]),
    decode_head=dict(num_classes=150),
    test_cfg=dict(mode='whole'))

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

optim_wrapper = dict(optimizer=dict(_delete_=True, type='AdamW', lr=1e-4, weight_decay=1e-4))
param_scheduler = [dict(type='PolyLR', power=0.9, eta_min=0.0, by_epoch=False, begin=0, end=80000)]
