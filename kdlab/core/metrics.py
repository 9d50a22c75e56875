"""Evaluation measures on logits: accuracy, NLL, ECE, agreement, KL, distance to a true label distribution."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def topk_accuracy(logits: Tensor, labels: Tensor, k: int = 1) -> float:
    """Percentage of samples whose label is among the ``k`` largest logits."""
    k = min(k, logits.shape[1])
    hit = (logits.topk(k, dim=1).indices == labels[:, None]).any(1)
    return 100.0 * hit.float().mean().item()


def nll(logits: Tensor, labels: Tensor) -> float:
    return F.cross_entropy(logits.float(), labels).item()


def ece(logits: Tensor, labels: Tensor, bins: int = 15) -> float:
    """Expected calibration error (percent) with ``bins`` equal-width confidence bins (Guo et al. 2017)."""
    probs = logits.float().softmax(1)
    conf, pred = probs.max(1)
    correct = (pred == labels).float()
    # bin i holds confidences in (i/bins, (i+1)/bins]
    idx = (conf * bins).ceil().long().clamp(1, bins) - 1
    conf_sum = torch.zeros(bins).index_add_(0, idx, conf)
    acc_sum = torch.zeros(bins).index_add_(0, idx, correct)
    gap = (conf_sum - acc_sum).abs()  # = n_b * |conf_b - acc_b|
    return 100.0 * (gap.sum() / len(labels)).item()


def agreement(a: Tensor, b: Tensor) -> float:
    """Top-1 agreement (percent) of two sets of logits (student fidelity)."""
    return 100.0 * (a.argmax(1) == b.argmax(1)).float().mean().item()


def kl_divergence(p_logits: Tensor, q_logits: Tensor, temperature: float = 1.0) -> float:
    """Mean over samples of KL(softmax(p/T) || softmax(q/T))."""
    lp = F.log_softmax(p_logits.float() / temperature, 1)
    lq = F.log_softmax(q_logits.float() / temperature, 1)
    return (lp.exp() * (lp - lq)).sum(1).mean().item()


def l1_to_distribution(logits: Tensor, target: Tensor) -> float:
    """Mean over samples of ||softmax(logits) - target||_1 (SoTeacher's approximation error to p*(x))."""
    return (logits.float().softmax(1) - target.float()).abs().sum(1).mean().item()


def classification_metrics(logits: Tensor, labels: Tensor) -> dict[str, float]:
    logits, labels = logits.cpu(), labels.cpu()
    out = {"top1": topk_accuracy(logits, labels, 1)}
    if logits.shape[1] >= 5:
        out["top5"] = topk_accuracy(logits, labels, 5)
    out["nll"] = nll(logits, labels)
    out["ece"] = ece(logits, labels)
    return out


T_RANGE = (0.05, 20.0)  # temperatures outside it only arise from a hold-out too small or too easy to fit one


def fit_temperature(logits: Tensor, labels: Tensor, steps: int = 100) -> float:
    """The temperature T > 0 minimising the NLL of softmax(logits / T) (Guo et al. 2017), by L-BFGS on log T,
    bounded to ``T_RANGE``.

    Fit it on held-out data, never on the data it is evaluated on.  When the hold-out is classified without a
    single error the NLL keeps falling as T -> 0, so no temperature is identified: T = 1 (no scaling) is returned
    with a warning instead of a vanishing T that would make the test NLL explode.
    """
    logits, labels = logits.detach().float().cpu(), labels.cpu()
    if len(labels) == 0 or bool((logits.argmax(1) == labels).all()):
        import warnings

        warnings.warn(f"temperature scaling: the {len(labels)} held-out samples are all classified correctly, "
                      "which does not identify a temperature; using T = 1 (hold out more data)", stacklevel=2)
        return 1.0
    lo, hi = (float(torch.tensor(t).log()) for t in T_RANGE)
    log_t = torch.zeros((), requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(logits / log_t.clamp(lo, hi).exp(), labels)
        loss.backward()
        return loss

    opt.step(closure)
    return float(log_t.detach().clamp(lo, hi).exp())


def calibration_metrics(logits: Tensor, labels: Tensor, temperature: float | None = None) -> dict[str, float]:
    """ECE and NLL, and with a fitted ``temperature`` also after temperature scaling."""
    out = {"ece": ece(logits, labels), "nll": nll(logits, labels)}
    if temperature is not None:
        out.update({"temperature": temperature, "ece_ts": ece(logits / temperature, labels),
                    "nll_ts": nll(logits / temperature, labels)})
    return out


def linear_cka(x: Tensor, y: Tensor) -> float:
    """Linear centred kernel alignment of two representations of the same n samples (Kornblith et al. 2019):
    ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F) after centring each feature.  1 for identical representations,
    invariant to orthogonal transforms and isotropic scaling; feature dimensions may differ."""
    x = x.double().flatten(1)
    y = y.double().flatten(1)
    x = x - x.mean(0, keepdim=True)
    y = y - y.mean(0, keepdim=True)
    cross = (y.T @ x).pow(2).sum()
    return float(cross / ((x.T @ x).pow(2).sum().sqrt() * (y.T @ y).pow(2).sum().sqrt()))


def reliability_bins(logits: Tensor, labels: Tensor, bins: int = 15) -> dict[str, list[float]]:
    """Per confidence bin: mean confidence, accuracy and count (for reliability diagrams)."""
    probs = logits.float().softmax(1)
    conf, pred = probs.max(1)
    correct = (pred == labels).float()
    idx = (conf * bins).ceil().long().clamp(1, bins) - 1
    n = torch.zeros(bins).index_add_(0, idx, torch.ones_like(conf))
    c = torch.zeros(bins).index_add_(0, idx, conf)
    a = torch.zeros(bins).index_add_(0, idx, correct)
    safe = n.clamp(min=1)
    return {"confidence": (c / safe).tolist(), "accuracy": (a / safe).tolist(), "count": n.tolist()}
