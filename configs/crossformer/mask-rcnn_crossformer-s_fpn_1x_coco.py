# CrossFormer-S + Mask R-CNN, 1x schedule on COCO 2017 (reported: 45.4 box AP / 41.4 mask AP).
# Where the numbers come from: the official recipe of the original release (github.com/cheerss/
# CrossFormer, branch crossformer: detection/configs/mask_rcnn_crossformer_s_fpn_1x_coco.py and
# detection/crossformer_factory.py; the same file on branch main is under configs/crossformer/):
# G = 7 and I = (8, 4, 2, 1) at every stage (the dense recipes' setting, also for
# CrossFormer++), the v1 long-distance grouping (lda_grouping='v1': the branch's
# models/crossformer_backbone.py, which trained the released detector; see the model card),
# drop path 0.2, the 4 stage outputs with no extra norm, AdamW (lr 1e-4,
# weight decay 1e-4), linear warm-up over 500 iterations from 0.001 x lr, 8 GPUs x 2 images,
# 12 epochs with the lr divided by 10 after epochs 8 and 11 (mmdet's schedule_1x). Test: resize to
# fit 1333 x 800 keeping the aspect ratio, pad to a multiple of 32 (mmdet's COCO test pipeline and
# data preprocessor, as the official one).
# Released detector: model card "Released dense weights" (load_from= with tools/test.py).
# Weights: the official ImageNet-1K classification checkpoint (crossformer-s.pth), on
# the Google Drive page https://drive.google.com/file/d/1RAkigsgr33va0RZ85S2Shs2BhXYcS6U8/view:
# no direct download. Save it as data/pretrained/crossformer-s.pth or pass
# --cfg-options model.backbone.init_cfg.checkpoint=/path/to/the/file (converted on load).
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['zoo.mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='CrossFormer',
        arch='small',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.2,
        model_kwargs=dict(group_size=7, interval=(8, 4, 2, 1), lda_grouping='v1'),
        init_cfg=dict(type='Pretrained', checkpoint='data/pretrained/crossformer-s.pth')),
    neck=dict(in_channels=[96, 192, 384, 768]))

optim_wrapper = dict(optimizer=dict(_delete_=True, type='AdamW', lr=1e-4, weight_decay=1e-4))
