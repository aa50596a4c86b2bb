# DaViT-T + UperNet, 160k iterations on ADE20K with 512x512 crops (reported 46.3 mIoU).
# Where the numbers come from: the official segmentation code (github.com/dingmyu/davit,
# mmseg/configs/upernet_davit_512x512_160k_ade20k.py and _base_/models/upernet_davit.py):
# all four stages with an extra LayerNorm on each output, drop path 0.3, UperNet on
# [96, 192, 384, 768] with the auxiliary FCN head on the third stage (384 channels), SyncBN
# in the heads, AdamW (lr 6e-5, betas 0.9/0.999, weight decay 0.01, applied to every
# parameter: the official config's no-decay rule for norms is commented out), linear warm-up
# over 1500 iterations from 1e-6, then poly (power 1) decay to 0, 8 GPUs x 2 images. Test
# (mmseg's defaults, as the official _base_/datasets/ade20k.py): the whole image
# (test_cfg mode 'whole'), resized to 512 on the short side (2048x512, keep ratio) without
# rounding to a multiple of 32; the README's testing command adds --aug-test (multi-scale and
# flip: tta_pipeline below).
# The paper reports no Semantic FPN result for DaViT, so there is no Semantic FPN config.
# Weights: the official ImageNet-1K checkpoint through timm's copy (see the detection configs).
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
        type='DaViT',
        arch='tiny',
        out_indices=(0, 1, 2, 3),
        out_norms=True,
        out_norm_eps=1e-5,  # the official dense backbone's LayerNorms
        drop_path_rate=0.3,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://huggingface.co/timm/davit_tiny.msft_in1k/resolve/main/model.safetensors')),
    decode_head=dict(in_channels=[96, 192, 384, 768], num_classes=150),
    auxiliary_head=dict(in_channels=384, num_classes=150))
# mmseg 0.x's --aug-test (the README's testing command): MultiScaleFlipAug scaled the target size
# (2048, 512) by each ratio, with flip; run it through mmseg's test-time augmentation
# (tta_model, SegTTAModel), which tools/test.py does not switch on.
img_ratios = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
tta_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(
        type='TestTimeAug',
        transforms=[
            [dict(type='Resize', scale=(int(2048 * r), int(512 * r)), keep_ratio=True) for r in img_ratios],
            [dict(type='RandomFlip', prob=0., direction='horizontal'),
             dict(type='RandomFlip', prob=1., direction='horizontal')],
            [dict(type='LoadAnnotations', reduce_zero_label=True)],
            [dict(type='PackSegInputs')],
        ]),
]
train_dataloader = dict(batch_size=2)

optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=1500, end=160000),
]
