"""The timm model API that every hierarchical (stage-based) family shares.

A family's model class inherits ``StagedModel`` and provides the modules and attributes
it reads: ``self.stages`` (stages with a ``grad_checkpointing`` flag), ``self.head``,
``self.head_drop``, ``self.global_pool``, ``self.head_hidden_size``, ``self.in_chans``,
``self.min_input_size`` and ``self.feature_info``. Hooks a family overrides where it
differs: ``_stem`` (what runs before the first stage), ``stage_layout`` (the layout the
stages pass between them), ``head_modules`` (modules that only feed the classifier and are
dropped by ``prune_intermediate_layers``), ``group_matcher_stem`` and ``group_matcher_last``.
``forward_head`` stays in the family file: heads differ too much to share.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from timm.models._features import feature_take_indices

from zoo.layers import validate_input

__all__ = ['StagedModel', 'GLOBAL_POOLS', 'check_global_pool']

GLOBAL_POOLS = ('avg', '')


def check_global_pool(global_pool: str) -> str:
    if global_pool not in GLOBAL_POOLS:
        raise ValueError(f"global_pool must be 'avg' or '', got {global_pool!r}")
    return global_pool


class StagedModel(nn.Module):
    """Base class of the zoo's hierarchical backbones (see the module docstring)."""

    stage_layout: str = 'NCHW'  # 'NHWC' when the stages pass channels-last token grids
    head_modules: tuple[str, ...] = ()  # replaced by nn.Identity when the head is pruned
    group_matcher_stem: str = r'^stages\.0\.downsample'
    group_matcher_last: str = r'^norm'  # modules after the last block (grouped last)
    channels_last: bool = False  # convert the input to channels-last memory format first

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def _check_input(self, x: torch.Tensor) -> None:
        validate_input(x, in_chans=self.in_chans, min_size=self.min_input_size,
                       weight_dtype=next(self.parameters()).dtype, name=type(self).__name__)

    def _to_memory_format(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _to_output_fmt(self, x: torch.Tensor, output_fmt: str) -> torch.Tensor:
        if output_fmt == self.stage_layout:
            return x
        return x.permute(0, 2, 3, 1) if output_fmt == 'NHWC' else x.permute(0, 3, 1, 2)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return set()

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return dict(
            stem=self.group_matcher_stem,
            blocks=r'^stages\.(\d+)' if coarse else [
                (r'^stages\.(\d+)\.downsample', (0,)),
                (r'^stages\.(\d+)\.blocks\.(\d+)', None),
                (self.group_matcher_last, (99999,)),
            ],
        )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for stage in self.stages:
            stage.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = check_global_pool(global_pool)
        self.head = nn.Linear(self.head_hidden_size, num_classes) if num_classes > 0 else nn.Identity()

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: int | list[int] | None = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = 'NCHW',
            intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Forward returning the outputs of the selected stages.

        Args:
            x: input images.
            indices: last ``n`` stages if an int, else the stage indices to return.
            norm: unused: the stage outputs are the official dense features; norms that the
                official dense recipes add per output are the mm adapter's ``out_norms``, and
                a final norm before the classifier belongs to ``forward_head``.
            stop_early: stop after the last selected stage.
            output_fmt: ``'NCHW'`` or ``'NHWC'``.
            intermediates_only: return only the intermediates.
        """
        if output_fmt not in ('NCHW', 'NHWC'):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NHWC', got {output_fmt!r}")
        self._check_input(x)
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        stages = self.stages[:max_index + 1] if stop_early or intermediates_only else self.stages
        x = self._stem(self._to_memory_format(x))
        intermediates = []
        for i, stage in enumerate(stages):
            x = stage(x)
            if i in take_indices:
                intermediates.append(self._to_output_fmt(x, output_fmt))
        if intermediates_only:
            return intermediates
        return self._to_output_fmt(x, 'NCHW'), intermediates

    def prune_intermediate_layers(self, indices: int | list[int] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """Drop the stages, and the head with the modules that only feed it, that the
        selected intermediates do not need."""
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        self.stages = self.stages[:max_index + 1]
        if prune_head:
            for name in self.head_modules:
                setattr(self, name, nn.Identity())
            self.reset_classifier(0, '')
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Stage outputs of the last stage, NCHW."""
        self._check_input(x)
        return self._to_output_fmt(self.stages(self._stem(self._to_memory_format(x))), 'NCHW')

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
