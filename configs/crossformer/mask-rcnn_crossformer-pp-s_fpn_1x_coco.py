# CrossFormer++-S + Mask R-CNN, 1x schedule on COCO 2017 (reported: 46.4 box AP / 42.1
# mask AP).
# Where the numbers come from: the official recipe (github.com/cheerss/CrossFormer,
# detection/configs/crossformer_pp/mask_rcnn_crossformerpp_s_fpn_1x_coco.py) is
# CrossFormer-S's (mask-rcnn_crossformer-s_fpn_1x_coco.py)
# with the CrossFormer++-S backbone (branch main: models/crossformer_backbone_det.py), still
# with G = 7 and I = (8, 4, 2, 1) at every stage, branch main's long-distance grouping
# (lda_grouping='main'; see the model card) and drop path 0.2. No CrossFormer++ detector is
# released (the official README's to-do).
# Weights: the official ImageNet-1K classification checkpoint (crossformer_pp-s.pth), on
# the Baidu Cloud page https://pan.baidu.com/s/1smc_kRoogd0Ig5vfqwuGTA?pwd=crsf (key crsf):
# no direct download. Save it as data/pretrained/crossformer_pp-s.pth or pass
# --cfg-options model.backbone.init_cfg.checkpoint=/path/to/the/file (converted on load).
_base_ = ['./mask-rcnn_crossformer-s_fpn_1x_coco.py']

model = dict(
    backbone=dict(
        arch='pp_small',
        model_kwargs=dict(lda_grouping='main'),
        init_cfg=dict(type='Pretrained', checkpoint='data/pretrained/crossformer_pp-s.pth')),
    neck=dict(in_channels=[64, 128, 256, 512]))
