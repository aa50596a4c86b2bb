# Semantic FPN with VAN-B0 on the toy shapes (tools/make_toy_dataset.py), trained from scratch
# on CPU: mmseg's Semantic FPN with 64 channels in the neck and the head (instead of 256/128).
# The loss averages over the labelled (shape) pixels only, not over the ignored background too.
_base_ = [
    'mmseg::_base_/models/fpn_r50.py',
    '../_base_/datasets/toy_ade.py',
]
custom_imports = dict(imports=['zoo.mm'], allow_failed_imports=False)

model = dict(
    data_preprocessor=dict(size=_base_.crop_size),
    pretrained=None,
    backbone=dict(_delete_=True, type='VAN', arch='b0'),
    neck=dict(in_channels=[32, 64, 160, 256], out_channels=64),
    decode_head=dict(
        in_channels=[64, 64, 64, 64], channels=64, num_classes=3,
        loss_decode=dict(avg_non_ignore=True)))
