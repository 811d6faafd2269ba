"""The batched CRF functions (`trainables/models/crf.py`) against pytorch-crf, the reference:
the same Viterbi paths and log-likelihoods on random emissions, transitions and masks."""

import pytest
import torch
from torchcrf import CRF

from trainables.models import crf as batched


def _random_case(seed: int, n: int = 64, t: int = 30, k: int = 4, full: bool = False):
    g = torch.Generator().manual_seed(seed)
    model = CRF(k, batch_first=True)
    with torch.no_grad():
        for p in (model.start_transitions, model.end_transitions, model.transitions):
            p.copy_(torch.randn(p.shape, generator=g) * 2)
    emissions = torch.randn(n, t, k, generator=g) * 3
    lengths = torch.full((n,), t) if full else torch.randint(1, t + 1, (n,), generator=g)
    mask = torch.arange(t).unsqueeze(0) < lengths.unsqueeze(1)
    tags = torch.randint(0, k, (n, t), generator=g)
    return model, emissions, mask, tags, lengths


@pytest.mark.parametrize("seed,k,full", [(0, 2, True), (1, 2, False), (2, 5, False), (3, 3, True)])
def test_viterbi_equals_pytorch_crf(seed, k, full):
    model, emissions, mask, _, lengths = _random_case(seed, k=k, full=full)
    expected = model.decode(emissions, mask=mask)
    got = batched.viterbi_decode(model, emissions, mask)
    assert got.shape == mask.shape
    for row, path, n in zip(got, expected, lengths.tolist()):
        assert row[:n].tolist() == path
        assert not row[n:].any()


@pytest.mark.parametrize("seed,k,full", [(4, 2, True), (5, 2, False), (6, 5, False)])
def test_log_likelihood_equals_pytorch_crf(seed, k, full):
    model, emissions, mask, tags, _ = _random_case(seed, k=k, full=full)
    expected = model(emissions, tags, mask=mask, reduction="none")
    got = batched.log_likelihood(model, emissions, tags, mask)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4)


def test_log_likelihood_gradients_equal_pytorch_crf():
    model, emissions, mask, tags, _ = _random_case(7, n=16, t=12, k=2)
    emissions.requires_grad_(True)
    model(emissions, tags, mask=mask, reduction="mean").backward()
    expected = [emissions.grad.clone(), model.transitions.grad.clone(), model.start_transitions.grad.clone()]
    emissions.grad = None
    model.zero_grad()
    batched.log_likelihood(model, emissions, tags, mask).mean().backward()
    for got, want in zip([emissions.grad, model.transitions.grad, model.start_transitions.grad], expected):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_without_mask_is_a_full_mask():
    model, emissions, mask, tags, _ = _random_case(8, full=True)
    assert torch.equal(batched.viterbi_decode(model, emissions), batched.viterbi_decode(model, emissions, mask))
    torch.testing.assert_close(batched.log_likelihood(model, emissions, tags), model(emissions, tags, reduction="none"))
