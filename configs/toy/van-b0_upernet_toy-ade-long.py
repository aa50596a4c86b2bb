# The longer toy run of van-b0_upernet_toy-ade.py (the one whose accuracy configs/README.md
# quotes): 3000 iterations, evaluation and a checkpoint every 500. Telling the shapes apart
# pixel by pixel, from scratch, takes much longer than detecting them.
_base_ = './van-b0_upernet_toy-ade.py'

max_iters = 3000
train_cfg = dict(max_iters=max_iters, val_interval=500)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=False, begin=50, end=max_iters),
]
default_hooks = dict(
    logger=dict(interval=50),
    checkpoint=dict(interval=500, save_best='mIoU', rule='greater'))
