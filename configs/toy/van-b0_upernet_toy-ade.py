# UperNet with VAN-B0 on the toy shapes (tools/make_toy_dataset.py), trained from scratch on
# CPU: mmseg's UperNet with 128 decoder channels (instead of 512) and a 64-channel auxiliary
# head. Batches of 4: the pooling branch's BatchNorm needs more than one image. The losses
# average over the labelled (shape) pixels only, not over the ignored background too.
_base_ = [
    'mmseg::_base_/models/upernet_r50.py',
    '../_base_/datasets/toy_ade.py',
]
custom_imports = dict(imports=['zoo.mm'], allow_failed_imports=False)

model = dict(
    data_preprocessor=dict(size=_base_.crop_size),
    pretrained=None,
    backbone=dict(_delete_=True, type='VAN', arch='b0'),
    decode_head=dict(
        in_channels=[32, 64, 160, 256], channels=128, num_classes=3,
        loss_decode=dict(avg_non_ignore=True)),
    auxiliary_head=dict(
        in_channels=160, channels=64, num_classes=3, loss_decode=dict(avg_non_ignore=True)))
