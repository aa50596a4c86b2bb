"""The timm interface shared by plain (single-resolution) ViTs: what ``StagedModel`` is for
hierarchical models, for models whose "stages" are the blocks of one stride-16 token grid.

A model using :class:`PlainViTMixin` (next to ``nn.Module``) provides ``blocks`` (a
``ModuleList``), ``norm`` (the final norm), ``head``, ``embed_dim``, ``global_pool``,
``grad_checkpointing`` and the class attributes ``GLOBAL_POOLS`` (the accepted ``global_pool``
values) and ``STEM_PATTERN`` (the regex of its embedding parameters, for ``group_matcher``);
it writes its own ``forward_features``, ``forward_intermediates`` and ``forward_head``.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from timm.models._features import feature_take_indices

__all__ = ['PlainViTMixin']


class PlainViTMixin:
    GLOBAL_POOLS: tuple[str, ...] = ('avg', '')
    STEM_PATTERN: str = r'^pos_embed|^patch_embed'

    @property
    def stages(self) -> nn.ModuleList:
        """The blocks, under the name that hierarchical models (and the mm adapter's users) use."""
        return self.blocks

    def _check_pool(self, global_pool: str) -> str:
        if global_pool not in self.GLOBAL_POOLS:
            raise ValueError(f'global_pool must be one of {self.GLOBAL_POOLS}, got {global_pool!r}')
        return global_pool

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return dict(stem=self.STEM_PATTERN, blocks=[(r'^blocks\.(\d+)', None), (r'^norm', (99999,))])

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = self._check_pool(global_pool)
        self.head = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()

    def prune_intermediate_layers(self, indices: int | list[int] = 1, prune_norm: bool | None = None,
                                  prune_head: bool = True) -> list[int]:
        """Drop the blocks, the head and the final norm that the intermediates do not need.

        ``prune_norm=None`` (default) drops the final norm together with the head: it only
        feeds the head unless ``forward_intermediates(norm=True)`` is used, and a parameter
        without gradient breaks distributed training of dense models (mm backbones).
        """
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        self.blocks = self.blocks[:max_index + 1]
        if prune_norm or (prune_norm is None and prune_head):
            self.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0, '')
        return take_indices
