# DaViT-B + UperNet, 160k iterations on ADE20K with 512x512 crops (reported 49.4 mIoU): the
# recipe of davit-t_upernet_8xb2-160k_ade20k-512x512.py (see there for the sources) with the
# DaViT-B backbone (depths 1/1/9/1, widths 128-1024) and its ImageNet-1K weights. The official
# repository (github.com/dingmyu/davit) ships the DaViT-T config only; its README releases the
# DaViT-B segmentor trained with the same recipe, so only the backbone and the heads' input
# widths change.
_base_ = './davit-t_upernet_8xb2-160k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        arch='base',
        init_cfg=dict(
            checkpoint='https://huggingface.co/timm/davit_base.msft_in1k/resolve/main/model.safetensors')),
    decode_head=dict(in_channels=[128, 256, 512, 1024]),
    auxiliary_head=dict(in_channels=512))
