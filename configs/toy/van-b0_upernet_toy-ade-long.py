# The longer toy run of van-b0_upernet_toy-ade.py (the one that reaches the accuracy quoted in
# configs/README.md): 1000 iterations, evaluation and a checkpoint every 250.
_base_ = './van-b0_upernet_toy-ade.py'

max_iters = 1000
train_cfg = dict(max_iters=max_iters, val_interval=250)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=False, begin=50, end=max_iters),
]
default_hooks = dict(
    logger=dict(interval=25),
    checkpoint=dict(interval=250, save_best='mIoU', rule='greater'))
