"""Consistency regularization by temporal ensembling (SoTeacher, Sec. 4 and App. E; Laine & Aila 2017).

For each training sample the regulariser keeps an average of the model's softmax predictions, one per epoch
(each on that epoch's freshly augmented view).  The loss of a mini-batch is

    lambda_CR(t) * mean_i || softmax(f(x_i)) - buffer_i ||_2^2    (squared error summed over classes),

computed before the batch's rows are updated, and zero during the first epoch (there is no history yet).  The
update is buffer_i <- (1 - tau) buffer_i + tau * softmax(f(x_i)).detach(), with tau set by ``rule``:

* ``code`` (default; the authors' released code, helper/consist_util.py with train_teacher.py, behind the
  paper's tables): its epoch counter is the 1-based epoch + 1 after the first epoch, so tau = 1 on a sample's
  first visit and 1 / (n + 2) afterwards, n the number of earlier visits.  After epoch e (0-based, every sample
  visited every epoch) the row holds (2 p_0 + p_1 + ... + p_e) / (e + 2): the first epoch's prediction counts
  twice;
* ``mean`` (the paper's text): tau = 1 / (n + 1), the plain running mean (p_0 + ... + p_e) / (e + 1).

Counting each sample's visits, instead of using the epoch, keeps a row the average of the sample's own
predictions when an epoch skips it (``train.drop_last``, the last partial global batch of a several-process
job); with every sample visited every epoch n = e and both rules are exactly the formulas above.  A row never
visited adds no loss (instead of pulling towards zero).

Weight schedules (t the 0-based epoch, T the number of epochs, lambda_max the maximum weight):
``linear`` lambda_max (t+1)/T (default); ``cosine`` lambda_max cos((1 - (t+1)/T) pi/2);
``cyclic`` lambda_max sqrt(1 - (1 - (t+1)/T)^2); ``piecewise`` 0 / lambda_max/2 / lambda_max over the thirds of
training; ``step`` 0 before ``start_epoch``, lambda_max from it on.

The buffer (num_samples x num_classes floats) lives in memory (a module buffer, saved with checkpoints) or, with
``buffer="memmap"``, in memory-mapped files in the run folder (ImageNet: 1.28 M x 1000 floats = 5.1 GB each).
The memory-mapped buffer rotates over three files: epoch e reads the file written by epoch e - 1 and writes file
e mod 3, so an interruption in the middle of an epoch never damages the state that the last checkpoint, or the
one before it (the fallback when the last is corrupted), refers to.  Only those two checkpoints can be resumed
from in this mode.  Both modes do the same float32 arithmetic and train identically.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from kdlab.core.distributed import all_gather_cat, barrier, is_main_process

Schedule = Literal["linear", "cosine", "cyclic", "piecewise", "step"]
Rule = Literal["code", "mean"]
_FILES = 3  # memmap rotation: the epoch being written never touches the last two checkpoints' files


def consistency_weight(schedule: Schedule, epoch: int, epochs: int, lambda_max: float, start_epoch: int = 0) -> float:
    """lambda_CR at 0-based ``epoch`` of ``epochs``."""
    r = (epoch + 1) / epochs
    if schedule == "linear":
        return lambda_max * r
    if schedule == "cosine":
        return lambda_max * math.cos((1 - r) * math.pi / 2)
    if schedule == "cyclic":
        return lambda_max * math.sqrt(max(0.0, 1 - (1 - r) ** 2))
    if schedule == "piecewise":
        t = epoch + 1
        return 0.0 if t <= epochs / 3 else (lambda_max / 2 if t <= 2 * epochs / 3 else lambda_max)
    if schedule == "step":
        return lambda_max if epoch >= start_epoch else 0.0
    raise ValueError(f"unknown consistency schedule {schedule!r}")


class ConsistencyRegularizer(nn.Module):
    """``cr = ConsistencyRegularizer(num_samples, num_classes, epochs)``; in the step:
    ``loss = ce + cr(logits, index, epoch)`` (returns the weighted term and updates the buffer)."""

    def __init__(self, num_samples: int, num_classes: int, epochs: int, lambda_max: float = 1.0,
                 schedule: Schedule = "linear", start_epoch: int = 0,
                 buffer: Literal["memory", "memmap"] = "memory", folder: str | Path | None = None,
                 rule: Rule = "code"):
        super().__init__()
        consistency_weight(schedule, 0, max(epochs, 1), lambda_max, start_epoch)  # validates the name
        if rule not in ("code", "mean"):
            raise ValueError(f"rule must be 'code' or 'mean', got {rule!r}")
        self.rule = rule
        self.num_samples, self.num_classes, self.epochs = num_samples, num_classes, epochs
        self.lambda_max, self.schedule, self.start_epoch = lambda_max, schedule, start_epoch
        self.mode = buffer
        # every process writes every process's rows (memory) or reads the shared files: never broadcast by DDP
        self.gathered_buffers = ("visits", "average") if buffer == "memory" else ("visits",)
        # epochs that have visited each sample; small (4 bytes a sample), so in memory and in checkpoints always
        self.register_buffer("visits", torch.zeros(num_samples, dtype=torch.int32))
        if buffer == "memory":
            self.register_buffer("average", torch.zeros(num_samples, num_classes))
        elif buffer == "memmap":
            if folder is None:
                raise ValueError("a memory-mapped consistency buffer needs a folder (the run folder)")
            self.folder = Path(folder)
            self._files: list[np.memmap] | None = None
        else:
            raise ValueError(f"buffer must be 'memory' or 'memmap', got {buffer!r}")

    # -- memory-mapped storage ------------------------------------------------------------------------------
    def _open(self) -> list[np.memmap]:
        if self._files is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            files = []
            for k in range(_FILES):
                path = self.folder / f"consistency_buffer_{k}.f32"
                mode = "r+" if path.exists() and path.stat().st_size == 4 * self.num_samples * self.num_classes \
                    else "w+"
                files.append(np.memmap(path, dtype=np.float32, mode=mode, shape=(self.num_samples, self.num_classes)))
            self._files = files
        return self._files

    def _rows(self, index: Tensor, epoch: int) -> Tensor:
        """The given samples' rows as they stood after epoch - 1."""
        if self.mode == "memory":
            return self.average[index]
        src = self._open()[(epoch - 1) % _FILES]
        return torch.from_numpy(src[index.cpu().numpy()])

    def _write(self, index: Tensor, everyone: Tensor, rows: Tensor, epoch: int) -> None:
        """``everyone``: the indices of all processes' rows (``index`` with one process)."""
        if self.mode == "memory":
            # with several processes each holds the whole buffer: every process writes every process's rows
            self.average[everyone] = all_gather_cat(rows)
        else:  # one shared file: each process writes its own rows
            self._open()[epoch % _FILES][index.cpu().numpy()] = rows.detach().cpu().numpy()

    def on_epoch_start(self, epoch: int) -> None:
        """Memmap mode: the epoch's output file starts as a copy of its input, for samples it does not visit."""
        if self.mode == "memmap" and epoch > 0:
            if is_main_process():
                files = self._open()
                files[epoch % _FILES][:] = files[(epoch - 1) % _FILES]
                files[epoch % _FILES].flush()
            barrier()  # no process writes its rows before the copy is complete

    def on_epoch_end(self, epoch: int) -> None:
        if self.mode == "memmap":
            self._open()[epoch % _FILES].flush()
            barrier()  # every process's rows are on disk before anyone reads them next epoch

    # -- the term -------------------------------------------------------------------------------------------
    def weight(self, epoch: int) -> float:
        return consistency_weight(self.schedule, epoch, self.epochs, self.lambda_max, self.start_epoch)

    def update_weight(self, visits: Tensor) -> Tensor:
        """tau of each sample from its number of earlier visits (float64, as the scalars of the reference)."""
        n = visits.double()
        if self.rule == "mean":
            return 1.0 / (n + 1)
        return torch.where(n == 0, torch.ones_like(n), 1.0 / (n + 2))

    def forward(self, logits: Tensor, index: Tensor, epoch: int) -> Tensor:
        probs = F.softmax(logits.float(), dim=1)
        visits = self.visits[index.to(self.visits.device)].to(probs.device)
        if epoch == 0:
            loss = logits.new_zeros(())
            new = probs.detach()
        else:
            old = self._rows(index, epoch).to(probs.device)
            seen = (visits > 0).to(probs.dtype)
            loss = self.weight(epoch) * ((probs - old).pow(2).sum(1) * seen).mean()
            with torch.no_grad():
                tau = self.update_weight(visits).unsqueeze(1)
                new = (1 - tau).float() * old + tau.float() * probs.detach()
        with torch.no_grad():
            everyone = all_gather_cat(index)
            self._write(index, everyone, new, epoch)
            visited = everyone.to(self.visits.device)
            self.visits.index_add_(0, visited, torch.ones_like(visited, dtype=self.visits.dtype))
        return loss

    def buffer_snapshot(self, epoch: int) -> Tensor:
        """The buffer after ``epoch`` (a copy, on the CPU)."""
        if self.mode == "memory":
            return self.average.detach().cpu().clone()
        return torch.from_numpy(np.array(self._open()[epoch % _FILES]))

    def get_extra_state(self) -> Any:
        return {"mode": self.mode, "rule": self.rule}

    def set_extra_state(self, state: Any) -> None:
        if state.get("mode") != self.mode:
            raise ValueError(f"checkpoint holds a {state.get('mode')} consistency buffer, config asks for {self.mode}")
        if state.get("rule", "mean") != self.rule:  # checkpoints from before the option kept the plain mean
            raise ValueError(f"checkpoint's consistency buffer follows the {state.get('rule', 'mean')!r} rule, "
                             f"config asks for {self.rule!r}")
