# RetinaNet with VAN-B0 on the toy shapes (tools/make_toy_dataset.py), trained from scratch on
# CPU: mmdet's RetinaNet with a lighter neck and head (128 channels, 2 convs per branch
# instead of 256 and 4) so that an iteration of 4 images of 256 px takes about a second.
_base_ = [
    'mmdet::_base_/models/retinanet_r50_fpn.py',
    '../_base_/datasets/toy_coco_instance.py',
]
custom_imports = dict(imports=['zoo.mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(_delete_=True, type='VAN', arch='b0'),
    neck=dict(in_channels=[32, 64, 160, 256], out_channels=128),
    bbox_head=dict(num_classes=3, in_channels=128, feat_channels=128, stacked_convs=2))
