# iLLaMA-T + UperNet, 160k iterations on ADE20K with 512x512 crops: the zoo's plain-ViT recipe.
# The iLLaMA paper and code give no segmentation recipe; this one combines:
# - the backbone and neck of the detection recipe (mask-rcnn_illama-t_simple-fpn_1x_coco.py):
#   the last block's stride-16 patch tokens, ViTDet's simple feature pyramid to strides
#   4/8/16/32 with 256 channels (necks/simple_fpn.py), drop path 0.1;
# - mmseg's UperNet schedule for ViT/DeiT backbones (mmseg configs/vit/
#   vit_deit-s16_upernet_8xb2-160k_ade20k-512x512.py and its base): AdamW lr 6e-5, betas
#   0.9/0.999, weight decay 0.01, linear warm-up over 1500 iterations from 1e-6, then poly
#   (power 1) decay, 8 GPUs x 2 images, no decay on the position embedding, class token and
#   norms; the auxiliary FCN head on the stride-16 level.
_base_ = [
    'mmseg::_base_/models/upernet_r50.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_160k.py',
]
custom_imports = dict(imports=['zoo.mm', 'necks'], allow_failed_imports=False)

crop_size = (512, 512)
model = dict(
    data_preprocessor=dict(size=crop_size),
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='iLLaMA',
        arch='tiny',
        out_indices=(11,),
        drop_path_rate=0.1,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://huggingface.co/techmonsterwang/iLLaMA/resolve/main/illama-tiny-in1k-75.0.pth')),
    neck=dict(type='SimpleFeaturePyramid', in_channels=192, out_channels=256, num_outs=4),
    decode_head=dict(in_channels=[256, 256, 256, 256], num_classes=150),
    auxiliary_head=dict(in_channels=256, in_index=2, num_classes=150))
train_dataloader = dict(batch_size=2)

optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(norm_decay_mult=0.0, custom_keys={
        'backbone.model.pos_embed': dict(decay_mult=0.0),
        'backbone.model.cls_token': dict(decay_mult=0.0),
        '.norm': dict(decay_mult=0.0)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=1500, end=160000),
]
