# CrossFormer-B + RetinaNet, 1x schedule on COCO 2017 (reported: 46.2 box AP).
# Where the numbers come from: the official recipe (github.com/cheerss/CrossFormer, branch
# crossformer: detection/configs/retinanet_crossformer_b_fpn_1x_coco.py, class CrossFormer_B of
# detection/crossformer_factory.py) is CrossFormer-S's (retinanet_crossformer-s_fpn_1x_coco.py:
# G = 7, I = (8, 4, 2, 1), lda_grouping='v1', the same schedule and test pipeline) with the
# CrossFormer-B backbone and drop path 0.3.
# Weights: the official ImageNet-1K classification checkpoint (crossformer-b.pth), on
# the Google Drive page https://drive.google.com/file/d/1bK8biVCi17nz_nkt7rBfio_kywUpllSU/view:
# no direct download. Save it as data/pretrained/crossformer-b.pth or pass
# --cfg-options model.backbone.init_cfg.checkpoint=/path/to/the/file (converted on load).
# Released detector: model card "Released dense weights" (load_from= with tools/test.py).
_base_ = ['./retinanet_crossformer-s_fpn_1x_coco.py']

model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint='data/pretrained/crossformer-b.pth')))
