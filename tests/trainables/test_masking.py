import pytest
import torch

from trainables.data import masking


@pytest.mark.parametrize("strategy", masking.STRATEGIES)
@pytest.mark.parametrize("ratio", [0.15, 0.3])
def test_mask_hits_ratio_within_two_points(strategy, ratio):
    gen = torch.Generator().manual_seed(0)
    mask = masking.make_mask(strategy, (2048, 105, 4), ratio, "cpu", generator=gen)
    assert mask.dtype == torch.bool and mask.shape == (2048, 105, 4)
    assert abs(mask.float().mean().item() - ratio) <= 0.02


def test_patch_mask_hides_whole_patches_on_all_channels():
    mask = masking.patch_mask((64, 105, 4), 0.15, "cpu", patch_len=12, generator=torch.Generator().manual_seed(1))
    assert torch.equal(mask[..., 0:1].expand_as(mask), mask)  # all channels alike
    per_patch = mask[:, :96, 0].reshape(64, 8, 12)
    assert torch.all(per_patch.all(-1) | ~per_patch.any(-1))  # a patch is all hidden or all visible


def test_block_mask_runs_have_mean_length_near_three():
    mask = masking.block_mask((512, 105, 4), 0.15, "cpu", generator=torch.Generator().manual_seed(2))
    m = mask.permute(0, 2, 1).reshape(-1, 105).int()
    starts = ((m[:, 1:] == 1) & (m[:, :-1] == 0)).sum() + m[:, 0].sum()
    assert 2.4 < m.sum().item() / starts.item() < 3.6


def test_masked_loss_has_zero_gradient_on_visible_positions():
    torch.manual_seed(0)
    pred = torch.randn(8, 30, 4, requires_grad=True)
    target = torch.randn(8, 30, 4)
    mask = masking.random_mask((8, 30, 4), 0.3, "cpu")
    masking.masked_mse(pred, target, mask).backward()
    assert torch.all(pred.grad[~mask] == 0)
    assert torch.all(pred.grad[mask] != 0)


def test_masked_loss_ignores_visible_errors():
    target = torch.zeros(2, 10, 4)
    pred = torch.ones(2, 10, 4)
    mask = torch.zeros(2, 10, 4, dtype=torch.bool)
    mask[0, 3, 1] = True
    pred[~mask] = 100.0
    assert masking.masked_mse(pred, target, mask).item() == pytest.approx(1.0)


def test_interpolation_is_exact_on_a_linear_series():
    x = torch.linspace(0, 1, 50).view(1, 50, 1).repeat(3, 1, 4)
    mask = masking.random_mask((3, 50, 4), 0.4, "cpu", torch.Generator().manual_seed(3))
    mask[:, 0] = False
    mask[:, -1] = False
    filled = masking.interpolate_masked(x, mask)
    assert torch.allclose(filled, x, atol=1e-6)
    # edges fall back to the nearest visible value
    mask2 = torch.zeros(1, 50, 4, dtype=torch.bool)
    mask2[0, :5] = True
    assert torch.allclose(masking.interpolate_masked(x[:1], mask2)[0, :5], x[0, 5].expand(5, 4))


def test_unknown_strategy_is_a_clear_error():
    with pytest.raises(ValueError, match="expected one of: random, block, patch"):
        masking.make_mask("stripes", (1, 10, 4), 0.1, "cpu")
