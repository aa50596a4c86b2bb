# CrossFormer-L + Semantic FPN, 80k iterations on ADE20K with 512x512 crops (reported: 49.1 mIoU).
# Where the numbers come from: the official recipe (github.com/cheerss/CrossFormer, branch
# crossformer: segmentation/configs/fpn_crossformer_l_ade20k_40k.py, class CrossFormer_L of
# segmentation/crossformer_factory.py) is CrossFormer-S's (crossformer-s_fpn_8xb4-80k_ade20k-512x512.py:
# G = (14, 14, 7, 7), I = (16, 8, 2, 1), lda_grouping='v1', the same schedule and test pipeline)
# with the CrossFormer-L backbone and drop path 0.5.
# Weights: the official ImageNet-1K classification checkpoint (crossformer-l.pth), on
# the Google Drive page https://drive.google.com/file/d/1zRWByVW_KIZ87NgaBkDIm60DAsGJErdG/view:
# no direct download. Save it as data/pretrained/crossformer-l.pth or pass
# --cfg-options model.backbone.init_cfg.checkpoint=/path/to/the/file (converted on load).
# Released segmenter: model card "Released dense weights" (load_from= with tools/test.py).
_base_ = ['./crossformer-s_fpn_8xb4-80k_ade20k-512x512.py']

model = dict(
    backbone=dict(
        arch='large',
        drop_path_rate=0.5,
        init_cfg=dict(type='Pretrained', checkpoint='data/pretrained/crossformer-l.pth')),
    neck=dict(in_channels=[128, 256, 512, 1024]))
