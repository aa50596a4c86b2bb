# CrossFormer-B + Semantic FPN, 80k iterations on ADE20K with 512x512 crops (reported: 48.0 mIoU).
# Where the numbers come from: the official recipe (github.com/cheerss/CrossFormer, branch
# crossformer: segmentation/configs/fpn_crossformer_b_ade20k_40k.py, class CrossFormer_B of
# segmentation/crossformer_factory.py) is CrossFormer-S's (crossformer-s_fpn_8xb4-80k_ade20k-512x512.py:
# lda_grouping='v1', the same schedule and test pipeline) with the CrossFormer-B backbone, drop
# path 0.3, and G = 7, I = (8, 4, 2, 1) at every stage: unlike the S and L recipes
# (G = (14, 14, 7, 7), I = (16, 8, 2, 1)), the official B config keeps the detection setting.
# Weights: the official ImageNet-1K classification checkpoint (crossformer-b.pth), on
# the Google Drive page https://drive.google.com/file/d/1bK8biVCi17nz_nkt7rBfio_kywUpllSU/view:
# no direct download. Save it as data/pretrained/crossformer-b.pth or pass
# --cfg-options model.backbone.init_cfg.checkpoint=/path/to/the/file (converted on load).
# Released segmenter: model card "Released dense weights" (load_from= with tools/test.py).
_base_ = ['./crossformer-s_fpn_8xb4-80k_ade20k-512x512.py']

model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.3,
        model_kwargs=dict(group_size=7, interval=(8, 4, 2, 1)),
        init_cfg=dict(type='Pretrained', checkpoint='data/pretrained/crossformer-b.pth')))
