# DaViT-S + UperNet, 160k iterations on ADE20K with 512x512 crops (reported 48.8 mIoU): the
# recipe of davit-t_upernet_8xb2-160k_ade20k-512x512.py (see there for the sources) with the
# DaViT-S backbone (depths 1/1/9/1, widths 96-768) and its ImageNet-1K weights. The official
# repository (github.com/dingmyu/davit) ships the DaViT-T config only; its README releases the
# DaViT-S segmentor trained with the same recipe, so only the backbone and the heads' input
# widths change.
_base_ = './davit-t_upernet_8xb2-160k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        arch='small',
        init_cfg=dict(
            checkpoint='https://huggingface.co/timm/davit_small.msft_in1k/resolve/main/model.safetensors')),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))
