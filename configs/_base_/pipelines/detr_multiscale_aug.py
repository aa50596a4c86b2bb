# The DETR-style multi-scale training augmentation that Swin-era detection recipes use
# (DaViT's official detection configs among them): either a multi-scale resize (shorter side
# 480-800 in steps of 32, longer side at most 1333), or resize - random crop - multi-scale
# resize. Insert it into a train pipeline after RandomFlip as {{_base_.detr_multiscale_aug}}.
_detr_scales = [(1333, 480), (1333, 512), (1333, 544), (1333, 576), (1333, 608), (1333, 640),
                (1333, 672), (1333, 704), (1333, 736), (1333, 768), (1333, 800)]
detr_multiscale_aug = dict(type='RandomChoice', transforms=[
    [dict(type='RandomChoiceResize', scales=_detr_scales, keep_ratio=True)],
    [dict(type='RandomChoiceResize', scales=[(1333, 400), (1333, 500), (1333, 600)], keep_ratio=True),
     dict(type='RandomCrop', crop_type='absolute_range', crop_size=(384, 600), allow_negative_crop=True),
     dict(type='RandomChoiceResize', scales=_detr_scales, keep_ratio=True)],
])
