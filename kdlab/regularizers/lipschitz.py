"""Lipschitz regularization (SoTeacher, Sec. 4 and App. E): the sum over layers of each layer's Lipschitz
constant induced by the 1-norm.

Two modes:

* ``reference`` - the form of the authors' released code, behind the published tables:
  convolution -> the entry-wise L1 norm of the whole kernel, sum |w|;
  batch norm -> max_c |gamma_c| / sqrt(running_var_c + eps) (the gradient flows only through gamma);
  linear -> the induced 1-norm, max_j sum_i |W_ij| (the largest column absolute sum).
* ``exact`` - the paper's wording (Gouk et al. 2021) for convolutions too: the induced 1-norm of a convolution is
  the largest, over input channels, of sum |w| over the output channels (of its group) and kernel positions,
  which is smaller than the entry-wise norm.  Batch norm and linear layers are as above.

Covered layers: Conv1d, Conv2d (any groups), Linear, BatchNorm1d, BatchNorm2d (with affine weights; without
them a BN layer's constant does not depend on trainable parameters and is skipped).  Every other layer (pooling,
activations, LayerNorm, GroupNorm, embeddings, attention, ...) is ignored: listed by :meth:`ignored_layers`.

The layers are collected once; each call does one pass with a constant number of batched operations for the
convolutions (a fused per-tensor norm) and for all batch norms together (a segment max), so the cost does not
grow with a Python loop over parameters.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn as nn
from torch import Tensor

from kdlab.core.sync_bn import GlobalBatchNorm

_CONV = (nn.Conv1d, nn.Conv2d)
_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.SyncBatchNorm, GlobalBatchNorm)  # the last two: torchrun, train.sync_bn


def conv_lipschitz_exact(weight: Tensor, groups: int = 1) -> Tensor:
    """Induced 1-norm of a convolution: max over input channels of sum |w| over its output channels and taps."""
    out_ch, in_per_group = weight.shape[:2]
    col = weight.abs().flatten(2).sum(2)  # (out, in/groups)
    return col.reshape(groups, out_ch // groups, in_per_group).sum(1).max()


def linear_lipschitz(weight: Tensor) -> Tensor:
    """Induced 1-norm of x -> W x: the largest column absolute sum of W (out x in)."""
    return weight.abs().sum(0).max()


def batchnorm_lipschitz(bn: nn.modules.batchnorm._BatchNorm) -> Tensor:
    """max_c |gamma_c| / sqrt(running_var_c + eps): the inference-mode scale of the layer."""
    return (bn.weight.abs() * torch.rsqrt(bn.running_var + bn.eps)).max()


class LipschitzRegularizer(nn.Module):
    """``reg = LipschitzRegularizer(model); loss = ce + 1e-5 * reg()`` - works in any training loop."""

    def __init__(self, model: nn.Module, mode: Literal["reference", "exact"] = "reference"):
        super().__init__()
        if mode not in ("reference", "exact"):
            raise ValueError(f"mode must be 'reference' or 'exact', got {mode!r}")
        self.mode = mode
        self.bind(model)

    def bind(self, model: nn.Module) -> None:
        """Cover ``model``'s layers (again, after something replaced modules, e.g. SyncBatchNorm conversion)."""
        layers = [m for m in model.modules() if len(list(m.children())) == 0]
        # plain lists, not submodules: the regulariser must not own (or save) the model's layers
        self.__dict__["_convs"] = [m for m in layers if isinstance(m, _CONV)]
        self.__dict__["_linears"] = [m for m in layers if isinstance(m, nn.Linear)]
        self.__dict__["_bns"] = [m for m in layers if isinstance(m, _BN) and m.affine and m.track_running_stats]
        self.__dict__["_ignored"] = [m for m in layers if not isinstance(m, _CONV + _BN + (nn.Linear,))
                                     and any(True for _ in m.parameters(recurse=False))]
        sizes = torch.tensor([bn.num_features for bn in self._bns], dtype=torch.long)
        old = getattr(self, "_segments", None)
        segments = torch.repeat_interleave(torch.arange(len(self._bns)), sizes)
        self.register_buffer("_segments", segments if old is None else segments.to(old.device), persistent=False)

    def ignored_layers(self) -> list[nn.Module]:
        """Layers with parameters that the regulariser does not cover."""
        return list(self._ignored)

    def forward(self) -> Tensor:
        terms: list[Tensor] = []
        if self._convs:
            if self.mode == "reference":
                terms.append(torch.stack(torch._foreach_norm([c.weight for c in self._convs], 1)).sum())
            else:
                terms.append(torch.stack([conv_lipschitz_exact(c.weight, c.groups) for c in self._convs]).sum())
        terms.extend(linear_lipschitz(lin.weight) for lin in self._linears)
        if self._bns:
            gamma = torch.cat([bn.weight for bn in self._bns])
            with torch.no_grad():
                inv_std = torch.cat([torch.rsqrt(bn.running_var + bn.eps) for bn in self._bns])
            scale = gamma.abs() * inv_std
            seg = self._segments
            per_layer = torch.full((len(self._bns),), float("-inf"), device=scale.device, dtype=scale.dtype)
            per_layer = per_layer.scatter_reduce(0, seg, scale, reduce="amax", include_self=True)
            terms.append(per_layer.sum())
        if not terms:
            return torch.zeros(())
        return torch.stack(terms).sum()
