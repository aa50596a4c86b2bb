# CrossFormer++-S + UperNet, 160k iterations on ADE20K with 512x512 crops (reported:
# 49.4 mIoU, 50.8 multi-scale).
# Where the numbers come from: the official recipe (github.com/cheerss/CrossFormer,
# segmentation/configs/crossformer_pp/upernet_crossformerpp_s_ade20k.py) is
# CrossFormer-S's (crossformer-s_upernet_8xb2-160k_ade20k-512x512.py)
# with the CrossFormer++-S backbone (branch main: models/crossformer_backbone_seg.py), still
# with G = 7 and I = (8, 4, 2, 1) at every stage, branch main's long-distance grouping
# (lda_grouping='main'; see the model card) and drop path 0.2. No CrossFormer++ segmenter is
# released (the official README's to-do).
# Weights: the official ImageNet-1K classification checkpoint (crossformer_pp-s.pth), on
# the Baidu Cloud page https://pan.baidu.com/s/1smc_kRoogd0Ig5vfqwuGTA?pwd=crsf (key crsf):
# no direct download. Save it as data/pretrained/crossformer_pp-s.pth or pass
# --cfg-options model.backbone.init_cfg.checkpoint=/path/to/the/file (converted on load).
_base_ = ['./crossformer-s_upernet_8xb2-160k_ade20k-512x512.py']

model = dict(
    backbone=dict(
        arch='pp_small',
        model_kwargs=dict(lda_grouping='main'),
        init_cfg=dict(type='Pretrained', checkpoint='data/pretrained/crossformer_pp-s.pth')),
    decode_head=dict(in_channels=[64, 128, 256, 512]),
    auxiliary_head=dict(in_channels=256))
