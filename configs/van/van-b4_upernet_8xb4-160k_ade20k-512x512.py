# VAN-B4 + UperNet, 160k iterations on ADE20K (reported: 52.2 mIoU, ms): the official recipe
# of van-b0_upernet_8xb2-160k_ade20k-512x512.py (see there for the sources) with the B4
# backbone (drop path 0.4), its ImageNet-1K weights (the file the official config starts from,
# on the official Tsinghua Cloud folder) and 8 GPUs x 4 images
# (configs/upernet/1k_pretrained/upernet_van_b4_512x512_160k_ade20k.py).
_base_ = './van-b0_upernet_8xb2-160k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        arch='b4',
        drop_path_rate=0.4,
        init_cfg=dict(checkpoint='https://cloud.tsinghua.edu.cn/d/0100f0cea37d41ba8d08/files/?p=%2Fvan_b4.pth&dl=1')),
    decode_head=dict(in_channels=[64, 128, 320, 512]),
    auxiliary_head=dict(in_channels=320))
train_dataloader = dict(batch_size=4)
