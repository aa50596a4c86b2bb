# LookupViT-Ti + Semantic FPN, 40k iterations on ADE20K with 512x512 crops: the zoo's plain-ViT
# recipe, NOT the paper's (the paper reports no segmentation results). It combines:
# - the backbone and neck of the detection recipe: the last block's stride-16 lookup tokens,
#   compressed grid 10x10, ViTDet's simple feature pyramid to strides 4/8/16/32 with 256
#   channels (necks/simple_fpn.py) in place of the FPN neck, drop path 0.1;
# - the Semantic FPN schedule of the transformer backbones' papers (PVT, PoolFormer, VAN): AdamW
#   lr 2e-4, weight decay 1e-4, poly (power 0.9) decay over 40k iterations, 8 GPUs x 4 images.
# No released weights (init_cfg=None): point it at your own ImageNet checkpoint.
_base_ = [
    'mmseg::_base_/models/fpn_r50.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_40k.py',
]
custom_imports = dict(imports=['zoo.mm', 'necks'], allow_failed_imports=False)

crop_size = (512, 512)
model = dict(
    data_preprocessor=dict(size=crop_size),
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='LookupViT',
        arch='tiny',
        out_indices=(11,),
        model_kwargs=dict(compressed_size=10),
        drop_path_rate=0.1,
        init_cfg=None),
    neck=dict(_delete_=True, type='SimpleFeaturePyramid', in_channels=192, out_channels=256, num_outs=4),
    decode_head=dict(num_classes=150))
train_dataloader = dict(batch_size=4)

optim_wrapper = dict(optimizer=dict(_delete_=True, type='AdamW', lr=2e-4, weight_decay=1e-4))
param_scheduler = [
    dict(type='PolyLR', power=0.9, eta_min=0.0, by_epoch=False, begin=0, end=40000),
]
