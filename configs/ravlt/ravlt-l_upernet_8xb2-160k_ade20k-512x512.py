# RAVLT-L + UperNet, 160k iterations on ADE20K with 512x512 crops (reported: 53.2 mIoU).
# Where the numbers come from: the official config, github.com/qhfan/RALA
# segmentation/configs/RALA/RALA_Uper_l_2x.py (mmseg 0.x): the RAVLT-S recipe
# (ravlt-s_upernet_8xb2-160k_ade20k-512x512.py: extra LayerNorm2d on every output,
# optimizer, schedule, test resize to 512 on the short side, whole-image inference) with
# the large backbone, drop path 0.55, the UperNet head on [96, 192, 448, 640] and the auxiliary
# head on the 448-channel third output.
# Weights: the official ImageNet-1K RAVLT-L checkpoint (Hugging Face, converted on load).
_base_ = './ravlt-s_upernet_8xb2-160k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        arch='large',
        drop_path_rate=0.55,
        init_cfg=dict(checkpoint='https://huggingface.co/aldjalkdf/RAVLT/resolve/main/RAVLT_L.pth')),
    decode_head=dict(in_channels=[96, 192, 448, 640]),
    auxiliary_head=dict(in_channels=448))
