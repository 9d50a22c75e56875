"""Predictions of a model over a loader, in evaluation mode, gathered on the CPU."""

from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor


@torch.no_grad()
def predict(model: nn.Module, loader) -> Tensor:
    """Logits of ``model`` (in eval mode) for every batch of ``loader``, in order, on the CPU."""
    was_training = model.training
    model.eval()
    outs = [model(b.x).float().cpu() for b in loader.epoch(0)]
    model.train(was_training)
    return torch.cat(outs) if outs else torch.empty(0)


@torch.no_grad()
def predict_with_embeddings(model: nn.Module, loader) -> tuple[Tensor, Tensor]:
    """Logits and pooled penultimate embeddings (the feature contract's ``embedding``) on the CPU."""
    was = model.training
    model.eval()
    logits, emb = [], []
    for b in loader.epoch(0):
        f = model(b.x, features=True)
        logits.append(f.logits.float().cpu())
        emb.append(f.embedding.float().flatten(1).cpu())
    model.train(was)
    if not logits:
        return torch.empty(0), torch.empty(0)
    return torch.cat(logits), torch.cat(emb)
