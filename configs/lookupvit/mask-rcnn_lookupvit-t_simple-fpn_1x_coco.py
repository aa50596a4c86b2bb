# LookupViT-Ti + Mask R-CNN, 1x schedule on COCO 2017: the zoo's plain-ViT recipe, NOT the paper's.
# The LookupViT paper (arXiv 2407.12753) reports no detection or segmentation results and no code
# or weights exist, so this recipe is ours, the same as configs/illama/ (ViTDet, Li et al., arXiv
# 2203.16527, adapted to mmdet's 1x schedule):
# - backbone: the lookup tokens of the last block (stride 16, no final norm), compressed grid
#   10x10 as in classification (the compressed tokens only exchange information with the lookup
#   tokens; more of them at detection sizes is a choice to tune), drop path 0.1;
# - neck: ViTDet's simple feature pyramid (necks/simple_fpn.py): strides 4/8/16/32 from the
#   stride-16 map, 256 channels, plus a max-pooled stride-64 level;
# - optimizer: AdamW, lr 1e-4, weight decay 0.1, no decay on the position embedding and norms;
#   mmdet's 1x schedule (12 epochs, 8 GPUs x 2 images) and 1333x800 pipeline.
# Weights: none are released. Set init_cfg=dict(type='Pretrained', checkpoint=...) to your own
# ImageNet checkpoint of lookupvit_tiny (it loads through the family's checkpoint_filter_fn).
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
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
        scale_factors=(4.0, 2.0, 1.0, 0.5),
        num_outs=5))

optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.1),
    paramwise_cfg=dict(norm_decay_mult=0.0, custom_keys={
        'backbone.model.pos_embed': dict(decay_mult=0.0),
        '.norm': dict(decay_mult=0.0)}))
