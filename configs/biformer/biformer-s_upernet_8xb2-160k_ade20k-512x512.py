# BiFormer-S + UperNet, 160k iterations on ADE20K with 512x512 crops (reported: 49.8 mIoU,
# 50.8 multi-scale).
# Where the numbers come from: the official recipe (github.com/rayleizhu/BiFormer,
# semantic_segmentation/configs/ade20k/upernet.biformer_small.py, which follows UniFormer and
# CSWin): n_win 8 regions per side (training resolution 512), drop path 0.3, an extra
# LayerNorm2d on each of the 4 outputs, SyncBN, AdamW (lr 6e-5, betas 0.9/0.999, weight decay
# 0.01, none on norms), linear warm-up over 1500 iterations (ratio 1e-6) then poly (power 1)
# decay to 0, 8 GPUs x 2 images, test images resized to 512 on the short side (whole-image
# inference, no rounding to a multiple of 32); the multi-scale result is mmseg 0.x's
# --aug-test (tta_pipeline below). The official run used fp16.
# Weights: the official ImageNet-1K classification checkpoint (see
# configs/biformer/mask-rcnn_biformer-s_fpn_1x_coco.py).
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
        type='BiFormer',
        arch='small',
        out_indices=(0, 1, 2, 3),
        out_norms=True,
        drop_path_rate=0.3,
        model_kwargs=dict(n_win=8),
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://api.onedrive.com/v1.0/shares/s!AkBbczdRlZvChHDyM-x9KWRBZ832/root/content')),
    decode_head=dict(in_channels=[64, 128, 256, 512], num_classes=150),
    auxiliary_head=dict(in_channels=256, num_classes=150))
# The backbone's BatchNorms become SyncBN in distributed runs, as in the official backbone.
sync_bn = 'torch'
# mmseg 0.x's --aug-test (the official multi-scale + flip number): MultiScaleFlipAug scaled the
# target size (2048, 512) by each ratio, with flip (mmseg 1's own tta_pipeline scales the image
# instead); run it through mmseg's test-time augmentation (tta_model), which tools/test.py does
# not switch on.
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
    optimizer=dict(_delete_=True, type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(custom_keys=dict(norm=dict(decay_mult=0.))))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=1500, end=160000),
]
