# DaViT-T + Mask R-CNN, 3x schedule on COCO 2017: the official recipe (reported 47.4 box AP,
# 42.9 mask AP). Where the numbers come from: the official detection code
# (github.com/dingmyu/davit, mmdet/configs/davit_maskrcnn_3x_coco.py, mmdet 2.x): the 1x recipe
# (mask-rcnn_davit-t_fpn_1x_coco.py: same backbone, neck, optimizer and DETR-style multi-scale
# augmentation) with drop path 0.2 and 36 epochs, the lr divided by 10 after epochs 27 and 33
# (after mmdet's 500-iteration linear warm-up).
_base_ = './mask-rcnn_davit-t_fpn_1x_coco.py'

model = dict(backbone=dict(drop_path_rate=0.2))

max_epochs = 36
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[27, 33], gamma=0.1),
]
