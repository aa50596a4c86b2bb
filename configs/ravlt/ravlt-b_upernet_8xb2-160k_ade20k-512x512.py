# RAVLT-B + UperNet, 160k iterations on ADE20K with 512x512 crops (reported: 52.5 mIoU).
# Where the numbers come from: the official config, github.com/qhfan/RALA
# segmentation/configs/RALA/RALA_Uper_b_2x.py (mmseg 0.x): the RAVLT-S recipe
# (ravlt-s_upernet_8xb2-160k_ade20k-512x512.py: extra LayerNorm2d on every output,
# optimizer, schedule, test resize to 512 on the short side, whole-image inference) with
# the base backbone, drop path 0.4, the UperNet head on [96, 192, 384, 512] and the auxiliary
# head on the 384-channel third output.
# Weights: the official ImageNet-1K RAVLT-B checkpoint (Hugging Face, converted on load).
_base_ = './ravlt-s_upernet_8xb2-160k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.4,
        init_cfg=dict(checkpoint='https://huggingface.co/aldjalkdf/RAVLT/resolve/main/RAVLT_B.pth')),
    decode_head=dict(in_channels=[96, 192, 384, 512]),
    auxiliary_head=dict(in_channels=384))
