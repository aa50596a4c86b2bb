"""What every staged family shares: one ``Stage``, one ``forward_intermediates``, the timm API.

- :class:`Stage`: optional downsampling, blocks built by a family's block factory (one
  stochastic depth rate each), optional norm; gradient checkpointing through timm's
  ``checkpoint_seq``. Optionally a per-stage table module (RAVLT's 2-D RoPE) whose outputs every
  block takes as extra arguments.
- :class:`FeatureIntermediates`: timm's ``forward_intermediates`` as one loop over
  ``self.stages`` with four hooks, so that families that differ only in what runs before,
  between and after the stages share it: the zoo's own staged models (:class:`StagedModel`),
  the families built on timm's classes (DaViT, SHViT, HaloNet) and the plain ViTs
  (``zoo.plain_vit``, whose "stages" are their blocks).
- :class:`StagedModel`: the rest of timm's model API for the zoo's hierarchical families. A
  family's model class inherits it and provides ``self.stages`` (stages with a
  ``grad_checkpointing`` flag, usually :class:`Stage`), ``self.head``, ``self.head_drop``,
  ``self.global_pool``, ``self.head_hidden_size``, ``self.in_chans``, ``self.min_input_size``
  and ``self.feature_info``. Hooks a family overrides where it differs: ``_stem`` (what runs
  before the first stage), ``stage_layout`` (the layout the stages pass between them),
  ``head_modules`` (modules that only feed the classifier and are dropped by
  ``prune_intermediate_layers``), ``group_matcher_stem`` and ``group_matcher_last``.
  ``forward_head`` stays in the family file: heads differ too much to share.
- :func:`init_trunc_normal`: the weight init of the official ViT-style code (DeiT, Swin and
  their descendants), which most families' official code uses.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn as nn
from timm.layers import trunc_normal_
from timm.models._features import feature_take_indices
from timm.models._manipulate import checkpoint, checkpoint_seq

from zoo.layers import validate_input

__all__ = ['Stage', 'FeatureIntermediates', 'StagedModel', 'GLOBAL_POOLS', 'check_global_pool', 'to_output_fmt',
           'init_trunc_normal']

GLOBAL_POOLS = ('avg', '')
OUTPUT_FORMATS = ('NCHW', 'NHWC')


def check_global_pool(global_pool: str) -> str:
    if global_pool not in GLOBAL_POOLS:
        raise ValueError(f"global_pool must be 'avg' or '', got {global_pool!r}")
    return global_pool


def to_output_fmt(x: torch.Tensor, layout: str, output_fmt: str) -> torch.Tensor:
    """A 4-D map held in ``layout`` (``'NCHW'`` or ``'NHWC'``) as ``output_fmt`` (a view)."""
    if output_fmt == layout:
        return x
    return x.permute(0, 2, 3, 1) if output_fmt == 'NHWC' else x.permute(0, 3, 1, 2)


def init_trunc_normal(module: nn.Module, types: tuple[type[nn.Module], ...] = (nn.Linear,),
                      std: float = .02) -> None:
    """Truncated normal weights and zero biases for layers of ``types``; others stay as built.

    For ``model.apply(init_trunc_normal)`` (or with ``functools.partial`` for other ``types``).

    Args:
        module: the module to initialise (no-op unless it is one of ``types``).
        types: the layer classes to initialise.
        std: standard deviation of the truncated normal.
    """
    if isinstance(module, types):
        trunc_normal_(module.weight, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class Stage(nn.Module):
    """One stage: ``downsample``, then the blocks, then ``norm`` (each optional but the blocks).

    The modules keep the names of timm's stages (``downsample``, ``blocks.{j}``, ``norm``), so
    that state-dict keys read ``stages.{i}.blocks.{j}...`` in every family.

    Args:
        depth: number of blocks.
        block_fn: builds block ``j`` with stochastic depth rate ``drop_path``:
            ``block_fn(j, drop_path)``.
        drop_path: the blocks' stochastic depth rates, one per block (or one rate for all).
        downsample: what runs before the blocks (the stem of stage 0, a patch merging); None
            for nothing.
        norm: what runs after the blocks; None for nothing.
        rope: a module called with the height and width of the (NCHW) map after
            ``downsample``; its outputs (a tuple of tables, e.g. RAVLT's RoPE sines and
            cosines) go to every block as extra arguments, ``block(x, *tables)``. None: the
            blocks take the map only.
    """

    def __init__(
            self,
            depth: int,
            block_fn: Callable[[int, float], nn.Module],
            drop_path: float | Sequence[float] = 0.,
            downsample: nn.Module | None = None,
            norm: nn.Module | None = None,
            rope: nn.Module | None = None,
    ):
        super().__init__()
        rates = [float(drop_path)] * depth if isinstance(drop_path, (int, float)) else list(drop_path)
        if len(rates) != depth:
            raise ValueError(f'drop_path needs one rate per block ({depth}), got {len(rates)}')
        self.grad_checkpointing = False
        self.downsample = downsample if downsample is not None else nn.Identity()
        self.rope = rope  # registered (stages.{i}.rope...) only when given
        self.blocks = nn.Sequential(*[block_fn(j, rates[j]) for j in range(depth)])
        self.norm = norm if norm is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        checkpointing = self.grad_checkpointing and not torch.jit.is_scripting()
        if self.rope is not None:
            tables = self.rope(x.shape[-2], x.shape[-1])
            for block in self.blocks:
                x = checkpoint(block, x, *tables) if checkpointing else block(x, *tables)
        else:
            x = checkpoint_seq(self.blocks, x) if checkpointing else self.blocks(x)
        return self.norm(x)


class FeatureIntermediates:
    """timm's ``forward_intermediates`` over ``self.stages``, shared by every family.

    The loop (indices, ``stop_early``, ``intermediates_only``, ``output_fmt``) is written once
    here; a family says what differs through four hooks:

    - ``_forward_stem(x)``: check the input and run what comes before the first stage; returns
      the state the stages pass on (a map, or a family's tuple such as tokens and grid size).
    - ``_forward_stage(index, stage, state)``: run one stage (default ``stage(state)``).
    - ``_intermediate(index, state, norm, output_fmt)``: the returned map of a selected stage
      (default: the state, a map in ``stage_layout``, as ``output_fmt``; ``norm`` unused).
    - ``_forward_end(state, complete)``: the first returned value, from the last state run;
      ``complete`` says whether every stage ran (default: the map as NCHW).
    """

    stage_layout: str = 'NCHW'  # 'NHWC' when the stages pass channels-last token grids

    def _forward_stem(self, x: torch.Tensor) -> Any:
        raise NotImplementedError

    def _forward_stage(self, index: int, stage: nn.Module, state: Any) -> Any:
        return stage(state)

    def _intermediate(self, index: int, state: Any, norm: bool, output_fmt: str) -> torch.Tensor:
        return to_output_fmt(state, self.stage_layout, output_fmt)

    def _forward_end(self, state: Any, complete: bool) -> torch.Tensor:
        return to_output_fmt(state, self.stage_layout, 'NCHW')

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
            norm: what the family's ``_intermediate`` does with it (its docstring says);
                unused by the hierarchical families, whose stage outputs are the official
                dense features (norms that the official dense recipes add per output are the
                mm adapter's ``out_norms``).
            stop_early: stop after the last selected stage.
            output_fmt: ``'NCHW'`` or ``'NHWC'``.
            intermediates_only: return only the intermediates.
        """
        if output_fmt not in OUTPUT_FORMATS:
            raise ValueError(f"output_fmt must be 'NCHW' or 'NHWC', got {output_fmt!r}")
        state = self._forward_stem(x)
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        stages = self.stages[:max_index + 1] if stop_early or intermediates_only else self.stages
        intermediates = []
        for i, stage in enumerate(stages):
            state = self._forward_stage(i, stage, state)
            if i in take_indices:
                intermediates.append(self._intermediate(i, state, norm, output_fmt))
        if intermediates_only:
            return intermediates
        return self._forward_end(state, len(stages) == len(self.stages)), intermediates


class StagedModel(FeatureIntermediates, nn.Module):
    """Base class of the zoo's hierarchical backbones (see the module docstring)."""

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

    def _forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        return self._stem(self._to_memory_format(x))

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
        return to_output_fmt(self.stages(self._forward_stem(x)), self.stage_layout, 'NCHW')

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
