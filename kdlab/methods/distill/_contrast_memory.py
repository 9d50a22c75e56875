"""CRD's memories of past embeddings (negatives and positives for the NCE loss), kept as buffers so a resumed run
continues with exactly the memory it stopped with.

* :class:`BankMemory`: one slot per training sample and per network, keyed by the dataset index (the reference's
  ``ContrastMemory``); size ``num_train x dim`` each;
* :class:`QueueMemory`: a first-in first-out queue of the last ``size`` embeddings and their labels/indices, for
  data sets too large for a per-sample memory (MoCo-style bound; not in the CRD paper or code).

Both initialise their slots uniformly in ``[-1/sqrt(dim/3), 1/sqrt(dim/3)]`` like the reference.  With several
processes (torchrun) every update gathers the indices and embeddings of all processes first, so every process
holds the same memory.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from kdlab.core.distributed import all_gather_cat


def _uniform_init(n: int, dim: int) -> Tensor:
    bound = 1.0 / math.sqrt(dim / 3)
    return torch.rand(n, dim).mul_(2 * bound).sub_(bound)


REDRAWS = 3  # rounds of redrawing excluded positions when drawing with replacement


def sample_excluding(keys: Tensor, exclude: Tensor, k: int, replace: bool = False,
                     generator: torch.Generator | None = None, part: tuple[int, int, int] | None = None
                     ) -> tuple[Tensor, Tensor]:
    """For each row b, ``k`` positions p of ``keys`` with ``keys[p] != exclude[b]``, drawn uniformly.

    Without replacement (the reference's ``np.random.choice(replace=False)``) through random scores + top-k.  Rows
    with fewer than ``k`` allowed positions get excluded ones too, flagged False in the returned validity mask.
    With replacement: excluded positions are redrawn ``REDRAWS`` times (a fixed number, so the device never waits
    for the host); any still excluded are flagged False (a fraction q^4 of them, q the excluded share of keys).

    ``part = (start, stop, size)``: the rows are rows ``start:stop`` of a global batch of ``size``; the draws are
    made for the whole global batch (from ``generator``, seeded alike in every process) and these rows taken, so
    every process draws what one process would for the same samples.
    """
    b, n = exclude.shape[0], keys.shape[0]
    start, stop, size = part if part is not None else (0, b, b)
    dev = keys.device
    if not replace:
        scores = torch.rand(size, n, device=dev, generator=generator)[start:stop]
        bad = keys.unsqueeze(0) == exclude.unsqueeze(1)
        scores.masked_fill_(bad, 2.0)
        vals, pos = scores.topk(k, dim=1, largest=False)
        return pos, vals < 1.5
    pos = torch.randint(0, n, (size, k), device=dev, generator=generator)[start:stop]
    for _ in range(REDRAWS):
        redraw = torch.randint(0, n, (size, k), device=dev, generator=generator)[start:stop]
        pos = torch.where(keys[pos] == exclude.unsqueeze(1), redraw, pos)
    return pos, keys[pos] != exclude.unsqueeze(1)


class BankMemory(nn.Module):
    """Per-sample memory: ``student[i]`` / ``teacher[i]`` hold a momentum average of sample i's embeddings."""

    gathered_buffers = ("student", "teacher", "keys")  # equal on every process by construction and gathering

    def __init__(self, num_train: int, dim: int, labels: Tensor | None, momentum: float = 0.5,
                 negatives: str = "other_class", replace: bool = False):
        super().__init__()
        self.momentum, self.negatives, self.replace = momentum, negatives, replace
        self.register_buffer("student", _uniform_init(num_train, dim))
        self.register_buffer("teacher", _uniform_init(num_train, dim))
        # derived from the data set, so not saved
        keys = labels.long() if negatives == "other_class" else torch.arange(num_train)
        self.register_buffer("keys", keys, persistent=False)

    def max_negatives(self) -> int:
        """The largest k every sample can draw without replacement."""
        if self.negatives == "any":
            return self.keys.numel() - 1
        return int(self.keys.numel() - torch.bincount(self.keys).max())

    def rows(self, index: Tensor, y: Tensor, k: int, generator: torch.Generator | None = None,
             part: tuple[int, int, int] | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Positive first, then k negatives: (student rows, teacher rows), each (B, k+1, dim), and a (B, k) mask."""
        exclude = y if self.negatives == "other_class" else index
        neg, valid = sample_excluding(self.keys, exclude, k, self.replace, generator, part)
        idx = torch.cat([index.unsqueeze(1), neg], dim=1)
        return self.student[idx], self.teacher[idx], valid

    @torch.no_grad()
    def update(self, index: Tensor, y: Tensor, v_s: Tensor, v_t: Tensor) -> None:
        m = self.momentum
        index = all_gather_cat(index)
        for bank, v in ((self.student, v_s), (self.teacher, v_t)):
            mixed = bank[index] * m + all_gather_cat(v.detach().to(bank.dtype)) * (1 - m)
            bank.index_copy_(0, index, F.normalize(mixed, dim=1))


class QueueMemory(nn.Module):
    """The last ``size`` embeddings of both networks.  The positive of a sample is the other network's current
    (detached) embedding of it; negatives are drawn from the queue, skipping entries of the sample's class (or the
    sample itself, ``negatives: any``)."""

    gathered_buffers = ("student", "teacher", "labels", "indices", "ptr")

    def __init__(self, size: int, dim: int, negatives: str = "other_class", replace: bool = False):
        super().__init__()
        self.negatives, self.replace = negatives, replace
        self.register_buffer("student", _uniform_init(size, dim))
        self.register_buffer("teacher", _uniform_init(size, dim))
        # -1: the random initial slots, which belong to no class and no sample
        self.register_buffer("labels", torch.full((size,), -1, dtype=torch.long))
        self.register_buffer("indices", torch.full((size,), -1, dtype=torch.long))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    def max_negatives(self) -> int:
        return self.labels.numel()

    def rows(self, index: Tensor, y: Tensor, k: int, v_s: Tensor, v_t: Tensor,
             generator: torch.Generator | None = None, part: tuple[int, int, int] | None = None
             ) -> tuple[Tensor, Tensor, Tensor]:
        keys, exclude = (self.labels, y) if self.negatives == "other_class" else (self.indices, index)
        neg, valid = sample_excluding(keys, exclude, k, self.replace, generator, part)
        s_rows = torch.cat([v_s.detach().to(self.student.dtype).unsqueeze(1), self.student[neg]], dim=1)
        t_rows = torch.cat([v_t.detach().to(self.teacher.dtype).unsqueeze(1), self.teacher[neg]], dim=1)
        return s_rows, t_rows, valid

    @torch.no_grad()
    def update(self, index: Tensor, y: Tensor, v_s: Tensor, v_t: Tensor) -> None:
        size = self.labels.numel()
        index, y = all_gather_cat(index), all_gather_cat(y)
        v_s = all_gather_cat(v_s.detach().to(self.student.dtype))
        v_t = all_gather_cat(v_t.detach().to(self.teacher.dtype))
        index, y, v_s, v_t = index[-size:], y[-size:], v_s[-size:], v_t[-size:]  # a batch larger than the queue
        pos = (self.ptr + torch.arange(index.numel(), device=index.device)) % size
        self.student.index_copy_(0, pos, v_s)
        self.teacher.index_copy_(0, pos, v_t)
        self.labels.index_copy_(0, pos, y.long())
        self.indices.index_copy_(0, pos, index.long())
        self.ptr.copy_((self.ptr + index.numel()) % size)
