# LookupViT-Ti + UperNet, 160k iterations on ADE20K with 512x512 crops: the zoo's plain-ViT recipe,
# NOT the paper's (the paper reports no segmentation results). It combines:
# - the backbone and neck of the detection recipe (mask-rcnn_lookupvit-t_simple-fpn_1x_coco.py):
#   the last block's stride-16 lookup tokens, compressed grid 10x10, ViTDet's simple feature
#   pyramid to strides 4/8/16/32 with 256 channels (necks/simple_fpn.py), drop path 0.1;
# - mmseg's UperNet schedule for ViT/DeiT backbones: AdamW lr 6e-5, betas 0.9/0.999, weight decay
#   0.01, linear warm-up over 1500 iterations, then poly (power 1) decay, 8 GPUs x 2 images, no
#   decay on the position embedding and norms; the auxiliary FCN head on the stride-16 level.
# No released weights (init_cfg=None): point it at your own ImageNet checkpoint.
_base_ = [
    'mmseg::_base_/models/upernet_r50.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_160k.py',
]
custom_imports = dict(imports=['zoo.mm', 'necks'], allow_failed_imports=False)

crop_size = (512, 512)
model = dict(
    data_preprocessor=dict(size=crop_size),
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='LookupViT',
        arch='tiny',
        out_indices=(11,),
        model_kwargs=dict(compressed_size=10),
        drop_path_rate=0.1,
        init_cfg=None),
    neck=dict(type='SimpleFeaturePyramid', in_channels=192, out_channels=256, num_outs=4),
    decode_head=dict(in_channels=[256, 256, 256, 256], num_classes=150),
    auxiliary_head=dict(in_channels=256, in_index=2, num_classes=150))
train_dataloader = dict(batch_size=2)

optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(norm_decay_mult=0.0, custom_keys={
        'backbone.model.pos_embed': dict(decay_mult=0.0),
        '.norm': dict(decay_mult=0.0)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=1500, end=160000),
]
