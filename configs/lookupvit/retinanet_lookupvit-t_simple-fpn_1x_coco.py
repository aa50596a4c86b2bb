# LookupViT-Ti + RetinaNet, 1x schedule on COCO 2017: the zoo's plain-ViT recipe, NOT the paper's
# (the paper reports no dense results). As mask-rcnn_lookupvit-t_simple-fpn_1x_coco.py (see there),
# with ViTDet's RetinaNet pyramid: strides 8/16/32 from the stride-16 lookup map (scale factors 2,
# 1, 0.5) plus strides 64 and 128 from 3x3 stride-2 convs on the coarsest output, 256 channels;
# AdamW lr 1e-4, weight decay 0.1; mmdet's 1x schedule. No released weights (init_cfg=None).
_base_ = [
    'mmdet::_base_/models/retinanet_r50_fpn.py',
    'mmdet::_base_/datasets/coco_detection.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['zoo.mm', 'necks'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='LookupViT',
        arch='tiny',
        out_indices=(11,),
        model_kwargs=dict(compressed_size=10),
        drop_path_rate=0.1,
        init_cfg=None),
    neck=dict(
        _delete_=True,
        type='SimpleFeaturePyramid',
        in_channels=192,
        out_channels=256,
        scale_factors=(2.0, 1.0, 0.5),
        num_outs=5,
        add_extra_convs=True))

optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.1),
    paramwise_cfg=dict(norm_decay_mult=0.0, custom_keys={
        'backbone.model.pos_embed': dict(decay_mult=0.0),
        '.norm': dict(decay_mult=0.0)}))
