"""Batch norm over the global batch of a several-process job, on any device (``train.sync_bn``).

PyTorch's ``nn.SyncBatchNorm`` runs on CUDA only; on CUDA kdlab uses it.  Elsewhere (CPU processes on gloo)
:class:`GlobalBatchNorm` computes the same thing with differentiable all-reduces: the mean over every process's
part of the batch, then the biased variance around it (two passes, as the single-process kernel), the running
statistics from them (the unbiased variance, as ``nn.BatchNorm``).  In evaluation mode, or with one process, it is
an ordinary batch norm.  With ``train.sync_bn`` both the model's and the method's BN layers (connectors,
branches, peers) are converted, so a BN network trained on N processes follows the 1-process run.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor

from kdlab.core.distributed import is_active, sum_with_grad


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """A drop-in for ``nn.BatchNorm{1,2,3}d`` whose training statistics are those of the global batch.

    (Not a subclass of ``nn.SyncBatchNorm``: DistributedDataParallel refuses those outside CUDA.)"""

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and is_active()):
            return super().forward(x)  # this process's batch (or the running statistics)
        c = x.shape[1]
        dims = [0, *range(2, x.dim())]
        shape = (1, c) + (1,) * (x.dim() - 2)
        xf = x.float()
        count = torch.tensor([x.numel() // c], dtype=torch.float32, device=x.device)
        total = sum_with_grad(torch.cat([xf.sum(dims), count]))
        n = total[-1]
        mean = total[:c] / n
        centered = xf - mean.view(shape)
        var = sum_with_grad(centered.pow(2).sum(dims)) / n
        y = centered * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = (1.0 / float(self.num_batches_tracked)) if self.momentum is None else self.momentum
                unbiased = var * (n / (n - 1).clamp_min(1))
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(unbiased.detach(), alpha=m)
        return y.to(x.dtype)


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Every BN layer of ``module`` (in place where possible; returns the module, replaced if it is one itself) as
    ``nn.SyncBatchNorm`` on CUDA, :class:`GlobalBatchNorm` elsewhere; parameter and buffer names are kept."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return _convert(module)


def _convert(module: nn.Module) -> nn.Module:
    synced = isinstance(module, nn.SyncBatchNorm | GlobalBatchNorm)
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not synced:
        new = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                              module.track_running_stats)
        with torch.no_grad():
            if module.affine:
                new.weight, new.bias = module.weight, module.bias
            if module.track_running_stats:
                new.running_mean, new.running_var = module.running_mean, module.running_var
                new.num_batches_tracked = module.num_batches_tracked
        new.train(module.training)
        return new
    for name, child in module.named_children():
        converted = _convert(child)
        if converted is not child:
            setattr(module, name, converted)
    return module


__all__ = ["GlobalBatchNorm", "convert_sync_batchnorm"]
