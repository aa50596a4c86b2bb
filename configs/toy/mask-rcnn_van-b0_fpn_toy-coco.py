# Mask R-CNN with VAN-B0 on the toy shapes (tools/make_toy_dataset.py), trained from scratch
# on CPU: mmdet's Mask R-CNN with 128-channel neck and heads, a smaller box head and fewer
# proposals (the images hold at most four objects).
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    '../_base_/datasets/toy_coco_instance.py',
]
custom_imports = dict(imports=['zoo.mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(_delete_=True, type='VAN', arch='b0'),
    neck=dict(in_channels=[32, 64, 160, 256], out_channels=128),
    rpn_head=dict(in_channels=128, feat_channels=128),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=128),
        bbox_head=dict(in_channels=128, fc_out_channels=256, num_classes=3),
        mask_roi_extractor=dict(out_channels=128),
        mask_head=dict(in_channels=128, conv_out_channels=128, num_classes=3)),
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=1000, max_per_img=300),
        rcnn=dict(sampler=dict(num=128))),
    test_cfg=dict(rpn=dict(nms_pre=500, max_per_img=100)))

val_evaluator = dict(metric=['bbox', 'segm'])
test_evaluator = val_evaluator
