import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from trainables.data import augment
from trainables.data import synthetic_ohlc as synthetic
from trainables.data.ohlc import check_invariants, normalise


def _ohlc(seed: int, n: int = 16, t: int = 40) -> torch.Tensor:
    data = synthetic.generate(n, t, seed)["ohlc"]
    return normalise(torch.as_tensor(data, dtype=torch.float32))


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), warp=st.floats(0, 0.5), scale=st.floats(0, 0.5), jit=st.floats(0, 0.5))
def test_augmentation_keeps_ohlc_invariants(seed, warp, scale, jit):
    x = _ohlc(seed)
    gen = torch.Generator().manual_seed(seed)
    y = augment.augment(x, warp, scale, jit, gen)
    assert y.shape == x.shape
    o, h, lo, c = y.double().unbind(-1)
    eps = 1e-5
    assert torch.all(h >= torch.maximum(o, c) - eps)
    assert torch.all(torch.minimum(o, c) >= lo - eps)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), sigma=st.floats(0.01, 0.5))
def test_time_warp_alone_keeps_invariants_and_endpoints(seed, sigma):
    x = _ohlc(seed)
    y = augment.time_warp(x, sigma, generator=torch.Generator().manual_seed(seed))
    check_invariants(y.double().numpy() + 0.0, "warped")  # raises on any broken bar
    assert torch.allclose(y[:, 0], x[:, 0], atol=1e-5) and torch.allclose(y[:, -1], x[:, -1], atol=1e-5)


def test_time_warp_changes_the_series_and_zero_sigma_is_identity():
    x = _ohlc(0)
    assert torch.equal(augment.time_warp(x, 0.0), x)
    y = augment.time_warp(x, 0.2, generator=torch.Generator().manual_seed(0))
    assert (y - x).abs().max() > 1e-3


def test_scaling_uses_one_factor_per_window():
    x = _ohlc(1)
    y = augment.scale(x, 0.2, torch.Generator().manual_seed(0))
    ratio = y / x
    per_window = ratio.reshape(len(x), -1)
    assert torch.allclose(per_window, per_window[:, :1].expand_as(per_window), rtol=1e-4)


def test_augment_is_vectorised_no_python_per_sample(monkeypatch):
    # the batch of 512 goes through a fixed number of tensor ops, independent of the batch size
    calls = {"n": 0}
    real = torch.gather

    def counting(*args, **kwargs):
        calls["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "gather", counting)
    augment.augment(_ohlc(2, n=512), 0.12, 0.1, 0.03)
    assert calls["n"] == 2
