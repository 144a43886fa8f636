"""Margin softmax (ArcFace / CosFace / combined) through Partial FC with class centres sharded
over ranks (the PartialFC_V2 scheme of insightface's arcface_torch, written for this project).

Every rank holds ``num_classes / world_size`` class centres. Embeddings and labels of the whole
global batch are gathered (embeddings with gradient); each rank scores them against a random
subset of its own centres (all centres that are positives in the batch, topped up to
``sample_rate``); the softmax is normalised across ranks with two all-reduces. Without
torch.distributed initialised everything runs as a single rank.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


def _dist() -> bool:
    return dist.is_available() and dist.is_initialized()


class CombinedMarginLoss(nn.Module):
    """Target logit cos(theta) -> cos(m1 * theta + m2) - m3, then everything times ``s``.

    (1, 0.5, 0) is ArcFace, (1, 0, 0.35..0.4) CosFace, (m1, 0, 0) SphereFace-like. Takes cosine
    logits (N, C) and labels (N,) where -1 marks a row whose class is not among the columns.
    """

    def __init__(self, s: float = 64.0, m1: float = 1.0, m2: float = 0.0, m3: float = 0.4) -> None:
        super().__init__()
        self.s, self.m1, self.m2, self.m3 = s, m1, m2, m3

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        rows = torch.where(labels != -1)[0]
        cols = labels[rows]
        target = logits[rows, cols]
        if self.m1 == 1.0 and self.m2 == 0.0:
            new = target - self.m3  # CosFace: no arccos, exact gradient
        else:
            theta = torch.acos(target.clamp(-1 + 1e-7, 1 - 1e-7))
            angle = self.m1 * theta + self.m2
            # Past pi, cos(angle) rises again and would reward a worse angle; fall back to a
            # linear penalty there (the usual ArcFace "th / mm" rule, generalised).
            fallback = target - self.m3 - math.sin(math.pi - self.m2) * self.m2
            new = torch.where(angle <= math.pi, torch.cos(angle) - self.m3, fallback)
        logits = logits.index_put((rows, cols), new)
        return logits * self.s


class _AllGather(torch.autograd.Function):
    """all_gather with gradient: each rank gets the gradient summed over all ranks for its part."""

    @staticmethod
    def forward(ctx: object, tensor: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)  # gloo has no reduce_scatter; all_reduce + slice is equivalent
        n = grad.shape[0] // dist.get_world_size()
        return grad[dist.get_rank() * n:(dist.get_rank() + 1) * n]


def gather_with_grad(t: torch.Tensor) -> torch.Tensor:
    return _AllGather.apply(t) if _dist() else t


def gather(t: torch.Tensor) -> torch.Tensor:
    if not _dist():
        return t
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts)


def _all_reduce(t: torch.Tensor, op: dist.ReduceOp = dist.ReduceOp.SUM) -> None:
    if _dist():
        dist.all_reduce(t, op)


class _DistCrossEntropy(torch.autograd.Function):
    """Mean cross entropy over rows whose columns are spread across ranks.

    In log space (log of the summed exponentials minus the shifted target logit) rather than the
    log of the target's probability: at s = 64 an early wrong answer has p < 1e-30, which float32
    cannot hold, and clamping it would cap the loss and hide how wrong the model is.
    """

    @staticmethod
    def forward(ctx: object, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        n = logits.shape[0]
        top = logits.max(dim=1, keepdim=True)[0]
        _all_reduce(top, dist.ReduceOp.MAX)
        shifted = logits - top
        probs = shifted.exp()
        total = probs.sum(dim=1, keepdim=True)
        _all_reduce(total)
        probs = probs / total
        rows = torch.where(labels != -1)[0]
        target = torch.zeros(n, 1, device=logits.device, dtype=logits.dtype)
        target[rows, 0] = shifted[rows, labels[rows]]
        _all_reduce(target)  # each row's positive lives on exactly one rank
        ctx.save_for_backward(probs, rows, labels)
        return (total.log() - target).mean()

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        probs, rows, labels = ctx.saved_tensors
        g = probs.clone()
        g[rows, labels[rows]] -= 1.0
        return g * (grad / probs.shape[0]), None


class PartialFC(nn.Module):
    """Sharded class centres + margin loss; ``forward(embeddings, labels) -> loss`` (a scalar,
    the same on every rank).

    Call it with this rank's embeddings (B, D) and labels (B,); it gathers the global batch.
    """

    def __init__(self, margin_loss: nn.Module, embedding_size: int, num_classes: int,
                 sample_rate: float = 1.0, rank: int = 0, world_size: int = 1) -> None:
        super().__init__()
        if not 0 < sample_rate <= 1:
            raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate}")
        if num_classes < world_size:
            raise ValueError(f"{num_classes} classes cannot be sharded over {world_size} ranks")
        self.margin_loss = margin_loss
        self.num_classes = num_classes
        self.sample_rate = sample_rate
        self.rank, self.world_size = rank, world_size
        self.num_local = num_classes // world_size + int(rank < num_classes % world_size)
        self.class_start = num_classes // world_size * rank + min(rank, num_classes % world_size)
        self.num_sample = int(sample_rate * self.num_local)
        self.weight = nn.Parameter(torch.normal(0, 0.01, (self.num_local, embedding_size)))

    def sample(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Local label indices -> (sampled centre indices, labels re-indexed into them)."""
        pos = labels != -1
        if self.num_sample >= self.num_local:
            return torch.arange(self.num_local, device=labels.device), labels
        positive = torch.unique(labels[pos], sorted=True)
        if positive.numel() >= self.num_sample:
            index = positive
        else:
            score = torch.rand(self.num_local, device=labels.device)
            score[positive] = 2.0  # positives always make the cut
            index = torch.topk(score, k=self.num_sample)[1].sort()[0]
        labels = labels.clone()
        labels[pos] = torch.searchsorted(index, labels[pos])
        return index, labels

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        embeddings = gather_with_grad(embeddings.float())
        labels = gather(labels.view(-1).long())
        local = labels - self.class_start
        local[(local < 0) | (local >= self.num_local)] = -1
        index, local = self.sample(local)
        weight = self.weight if index.numel() == self.num_local else self.weight[index]
        logits = F.linear(F.normalize(embeddings), F.normalize(weight)).clamp(-1, 1)
        return _DistCrossEntropy.apply(self.margin_loss(logits, local), local)
