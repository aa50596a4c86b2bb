# CrossFormer-B + UperNet, 160k iterations on ADE20K with 512x512 crops (reported: 49.7 mIoU, 50.6 multi-scale).
# Where the numbers come from: the official recipe (github.com/cheerss/CrossFormer, branch
# crossformer: segmentation/configs/upernet_crossformer_b_ade20k.py, class CrossFormer_B of
# segmentation/crossformer_factory.py) is CrossFormer-S's
# (crossformer-s_upernet_8xb2-160k_ade20k-512x512.py: G = 7, I = (8, 4, 2, 1), lda_grouping='v1',
# the same schedule and test pipelines) with the CrossFormer-B backbone and drop path 0.3.
# Weights: the official ImageNet-1K classification checkpoint (crossformer-b.pth), on
# the Google Drive page https://drive.google.com/file/d/1bK8biVCi17nz_nkt7rBfio_kywUpllSU/view:
# no direct download. Save it as data/pretrained/crossformer-b.pth or pass
# --cfg-options model.backbone.init_cfg.checkpoint=/path/to/the/file (converted on load).
# Released segmenter: model card "Released dense weights" (load_from= with tools/test.py).
_base_ = ['./crossformer-s_upernet_8xb2-160k_ade20k-512x512.py']

model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint='data/pretrained/crossformer-b.pth')))
