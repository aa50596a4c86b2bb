# DaViT-T + Semantic FPN, 80k iterations on ADE20K with 512x512 crops: OUR recipe (the DaViT
# paper reports UperNet only). PVT's Semantic FPN recipe, which the other families' Semantic
# FPN configs follow: AdamW (lr 1e-4, weight decay 1e-4), poly (power 0.9) decay to 0, 8 GPUs
# x 2 images for 80k iterations; the backbone as in the official DaViT dense recipes (all four
# stages, an extra LayerNorm with eps 1e-5 on each output), drop path 0.2 (the detection
# recipes use 0.1, UperNet 0.3).
# Weights: the official ImageNet-1K checkpoint through timm's copy (see the detection configs).
_base_ = [
    'mmseg::_base_/models/fpn_r50.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_80k.py',
]
custom_imports = dict(imports=['zoo.mm'], allow_failed_imports=False)

crop_size = (512, 512)
model = dict(
    data_preprocessor=dict(size=crop_size),
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='DaViT',
        arch='tiny',
        out_indices=(0, 1, 2, 3),
        out_norms=True,
        out_norm_eps=1e-5,  # the official dense backbone's LayerNorms
        drop_path_rate=0.2,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://huggingface.co/timm/davit_tiny.msft_in1k/resolve/main/model.safetensors')),
    neck=dict(in_channels=[96, 192, 384, 768]),
    decode_head=dict(num_classes=150))
train_dataloader = dict(batch_size=2)

optim_wrapper = dict(optimizer=dict(_delete_=True, type='AdamW', lr=1e-4, weight_decay=1e-4))
param_scheduler = [
    dict(type='PolyLR', power=0.9, eta_min=0.0, by_epoch=False, begin=0, end=80000),
]
