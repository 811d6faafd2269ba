"""A linear-chain CRF's Viterbi decoding and log-likelihood, batched in torch, over the parameters
of a `torchcrf.CRF` (pytorch-crf: `start_transitions`, `end_transitions`, `transitions`).

Why not pytorch-crf's own methods: its `decode` backtracks in Python, one `.item()` per window
and bar (a host synchronisation each on a GPU: thousands per validation), and its `forward`
checks the mask with `mask[:, 0].all()` and two `assert mask[0].all()`, three host
synchronisations per training step. Here the recursions are the same (a loop over bars,
vectorised over windows and tags) and the backtracking is a gather per bar on the device.
pytorch-crf stays the model's CRF module (its parameters, initialisation and checkpoints), and
the reference these functions are tested against (`tests/trainables/test_crf.py`: equal
paths and likelihoods on random emissions, transitions and masks).

Conventions are pytorch-crf's with `batch_first=True`: emissions (N, T, K), tags and mask (N, T),
the mask a left-aligned run of True per window whose first bar is always True.
"""

from __future__ import annotations

import torch


def _parameters(crf) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return crf.start_transitions, crf.transitions, crf.end_transitions


def _full_mask(emissions: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return torch.ones(emissions.shape[:2], dtype=torch.bool, device=emissions.device)
    return mask.bool()


def log_likelihood(crf, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """(N,) log p(tags | emissions) of each window (pytorch-crf's `forward(..., reduction="none")`)."""
    start, trans, end = _parameters(crf)
    mask = _full_mask(emissions, mask)
    n, t, _ = emissions.shape
    rows = torch.arange(n, device=emissions.device)
    m = mask.to(emissions.dtype)
    # Score of the given path: start + emissions + transitions over the unmasked bars + end.
    emitted = emissions.gather(2, tags.unsqueeze(-1)).squeeze(-1)  # (N, T)
    moved = trans[tags[:, :-1], tags[:, 1:]]  # (N, T - 1)
    last = tags[rows, mask.long().sum(1) - 1]
    score = start[tags[:, 0]] + emitted[:, 0] + ((moved + emitted[:, 1:]) * m[:, 1:]).sum(1) + end[last]
    # Normaliser: the forward algorithm in log space.
    alpha = start + emissions[:, 0]  # (N, K)
    for i in range(1, t):
        nxt = torch.logsumexp(alpha.unsqueeze(2) + trans + emissions[:, i].unsqueeze(1), dim=1)
        alpha = torch.where(mask[:, i].unsqueeze(1), nxt, alpha)
    return score - torch.logsumexp(alpha + end, dim=1)


def viterbi_decode(crf, emissions: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """(N, T) most likely tag of every bar (pytorch-crf's `decode`, as one tensor; bars past a
    window's mask are 0)."""
    start, trans, end = _parameters(crf)
    mask = _full_mask(emissions, mask)
    n, t, _ = emissions.shape
    score = start + emissions[:, 0]
    back = []  # back[i - 1][w, k]: the best tag at bar i - 1 given tag k at bar i
    for i in range(1, t):
        # emissions added before the max as pytorch-crf does, so that ties resolve the same way
        best, idx = (score.unsqueeze(2) + trans + emissions[:, i].unsqueeze(1)).max(dim=1)
        score = torch.where(mask[:, i].unsqueeze(1), best, score)
        back.append(idx)
    ends = mask.long().sum(1) - 1  # each window's last bar
    # Outside a window's mask `tag` keeps the window's final tag until the backtrack reaches its end.
    tag = (score + end).argmax(dim=1)
    path = torch.zeros(n, t, dtype=torch.long, device=emissions.device)
    for i in range(t - 1, -1, -1):
        inside = i <= ends
        path[:, i] = torch.where(inside, tag, 0)
        if i > 0:
            tag = torch.where(inside, back[i - 1].gather(1, tag.unsqueeze(1)).squeeze(1), tag)
    return path
