"""Scheduled-sampling schedules and the per-(sample, bin) ground-truth / prediction mixing."""

from __future__ import annotations

import math

import pytest
import torch

from neurohorizon.training.schedules import ScheduleConfig, mix_inputs, teacher_forcing_prob


def eps(cfg, i):
    """eps at progress i (step and epoch both set to i; unit-specific tests are below)."""
    return teacher_forcing_prob(cfg, step=i, epoch=i)


def test_constant():
    cfg = ScheduleConfig(kind="constant", value=0.7)
    assert [eps(cfg, i) for i in (0, 5, 1000)] == [0.7, 0.7, 0.7]
    assert eps(ScheduleConfig(kind="constant", value=0.1, floor=0.3), 4) == 0.3


def test_linear_known_points():
    cfg = ScheduleConfig(kind="linear", n=50)
    assert eps(cfg, 0) == 1.0
    assert eps(cfg, 10) == pytest.approx(0.8)
    assert eps(cfg, 25) == pytest.approx(0.5)
    assert eps(cfg, 50) == 0.0
    assert eps(cfg, 80) == 0.0  # never negative
    assert eps(ScheduleConfig(kind="linear", n=50, floor=0.1), 49) == pytest.approx(0.1)


def test_exponential_known_points():
    cfg = ScheduleConfig(kind="exponential", k=0.9)
    assert eps(cfg, 0) == 1.0
    assert eps(cfg, 1) == pytest.approx(0.9)
    assert eps(cfg, 10) == pytest.approx(0.9**10)
    assert eps(cfg, 100_000) == 0.0  # underflow, no error


def test_inverse_sigmoid_known_points():
    cfg = ScheduleConfig(kind="inverse_sigmoid", k=10.0)
    assert eps(cfg, 0) == pytest.approx(10 / 11)
    assert eps(cfg, 10 * math.log(10)) == pytest.approx(0.5)  # exp(i/k) = k
    assert eps(cfg, 37) == pytest.approx(10 / (10 + math.exp(3.7)))
    assert eps(cfg, 10**7) == 0.0  # exp(i/k) would overflow; stable form does not
    assert eps(ScheduleConfig(kind="inverse_sigmoid", k=1.0), 0) == pytest.approx(0.5)


def test_warmup_counts_from_its_end():
    # knowledge-base example: 50 epochs of pure teacher forcing, then decay
    cfg = ScheduleConfig(kind="linear", unit="epoch", warmup=50, n=100)
    assert all(teacher_forcing_prob(cfg, 0, e) == 1.0 for e in range(50))
    assert teacher_forcing_prob(cfg, 0, 50) == 1.0  # i = 0 at the end of warm-up
    assert teacher_forcing_prob(cfg, 0, 60) == pytest.approx(0.9)
    assert teacher_forcing_prob(cfg, 0, 150) == 0.0
    # warm-up also overrides kinds that start below 1
    iso = ScheduleConfig(kind="inverse_sigmoid", k=5.0, warmup=3)
    assert eps(iso, 2) == 1.0 and eps(iso, 3) == pytest.approx(5 / 6)


def test_floor_bounds_every_kind():
    for cfg in (
        ScheduleConfig(kind="linear", n=10, floor=0.25),
        ScheduleConfig(kind="exponential", k=0.5, floor=0.25),
        ScheduleConfig(kind="inverse_sigmoid", k=2.0, floor=0.25),
    ):
        values = [eps(cfg, i) for i in range(200)]
        assert min(values) == 0.25
        assert values[-1] == 0.25


@pytest.mark.parametrize(
    "cfg",
    [
        ScheduleConfig(kind="constant", value=0.4, warmup=5),
        ScheduleConfig(kind="linear", n=37, warmup=3, floor=0.05),
        ScheduleConfig(kind="exponential", k=0.97, warmup=10),
        ScheduleConfig(kind="inverse_sigmoid", k=20.0, warmup=2, floor=0.1),
    ],
)
def test_monotone_non_increasing_and_in_unit_interval(cfg):
    values = [eps(cfg, i) for i in range(500)]
    assert all(0.0 <= v <= 1.0 for v in values)
    assert all(b <= a for a, b in zip(values, values[1:]))


def test_unit_selects_step_or_epoch():
    by_step = ScheduleConfig(kind="linear", unit="step", n=1000)
    by_epoch = ScheduleConfig(kind="linear", unit="epoch", n=10)
    # step 500 of epoch 2
    assert teacher_forcing_prob(by_step, step=500, epoch=2) == pytest.approx(0.5)
    assert teacher_forcing_prob(by_epoch, step=500, epoch=2) == pytest.approx(0.8)
    # the other counter is ignored
    assert teacher_forcing_prob(by_step, 500, 0) == teacher_forcing_prob(by_step, 500, 9)
    assert teacher_forcing_prob(by_epoch, 0, 2) == teacher_forcing_prob(by_epoch, 9999, 2)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(kind="cosine"), "kind must be one of"),
        (dict(kind="linear", unit="batch", n=5), "unit"),
        (dict(kind="linear"), "n > 0"),
        (dict(kind="linear", n=0), "n > 0"),
        (dict(kind="exponential"), "0 < k < 1"),
        (dict(kind="exponential", k=1.0), "0 < k < 1"),
        (dict(kind="exponential", k=0.0), "0 < k < 1"),
        (dict(kind="inverse_sigmoid", k=0.5), "k >= 1"),
        (dict(kind="inverse_sigmoid"), "k >= 1"),
        (dict(floor=1.5), "floor"),
        (dict(floor=-0.1), "floor"),
        (dict(warmup=-1), "warmup"),
        (dict(warmup=2.5), "warmup"),
        (dict(kind="constant", value=1.2), "value"),
    ],
)
def test_invalid_configs_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ScheduleConfig(**kwargs)


def test_negative_progress_raises():
    with pytest.raises(ValueError, match="step and epoch"):
        teacher_forcing_prob(ScheduleConfig(), step=-1, epoch=0)


# ---------------------------------------------------------------------------- mixing


def pair(b=4, t=6, n=5):
    g = torch.Generator().manual_seed(0)
    truth = torch.randint(0, 5, (b, t, n), generator=g).float()
    return truth, truth + 100.0  # disjoint values: every entry's source is identifiable


def test_mix_extremes_are_exact():
    truth, pred = pair()
    mixed, mask = mix_inputs(truth, pred, 1.0, torch.Generator().manual_seed(1))
    assert torch.equal(mixed, truth) and mask.all() and mask.shape == (4, 6, 1)
    mixed, mask = mix_inputs(truth, pred, 0.0, torch.Generator().manual_seed(1))
    assert torch.equal(mixed, pred) and not mask.any()


def test_mix_whole_bin_rows_follow_the_mask():
    truth, pred = pair(b=8, t=20, n=7)
    mixed, mask = mix_inputs(truth, pred, 0.5, torch.Generator().manual_seed(2))
    from_truth = mixed == truth
    assert torch.equal(from_truth, mask.expand_as(truth))  # rows are all-truth or all-predicted
    assert torch.equal(mixed[~from_truth], pred[~from_truth])


def test_mix_frequency_and_independence():
    b, t, eps_ = 2000, 25, 0.3
    truth, pred = torch.zeros(b, t, 1), torch.ones(b, t, 1)
    _, mask = mix_inputs(truth, pred, eps_, torch.Generator().manual_seed(3))
    m = mask[..., 0].double()
    n = m.numel()
    assert abs(m.mean().item() - eps_) < 5 * math.sqrt(eps_ * (1 - eps_) / n)
    # independence across bins: P(both) = eps^2 for neighbouring bins and for samples
    both_bins = (m[:, 1:] * m[:, :-1]).mean().item()
    both_samples = (m[1:] * m[:-1]).mean().item()
    sd = math.sqrt(eps_**2 * (1 - eps_**2) / (b * (t - 1)))
    assert abs(both_bins - eps_**2) < 5 * sd
    assert abs(both_samples - eps_**2) < 5 * sd
    # per-bin frequencies are uniform (no bin position is favoured)
    per_bin = m.mean(0)
    assert (per_bin - eps_).abs().max() < 5 * math.sqrt(eps_ * (1 - eps_) / b)


def test_mix_reproducible_with_generator():
    truth, pred = pair()
    a = mix_inputs(truth, pred, 0.5, torch.Generator().manual_seed(7))
    b = mix_inputs(truth, pred, 0.5, torch.Generator().manual_seed(7))
    c = mix_inputs(truth, pred, 0.5, torch.Generator().manual_seed(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])


def test_mix_keeps_gradient_through_predictions():
    truth, pred = pair()
    pred = pred.clone().requires_grad_(True)
    mixed, mask = mix_inputs(truth, pred, 0.5, torch.Generator().manual_seed(4))
    mixed.sum().backward()
    assert torch.equal(pred.grad, (~mask).expand_as(pred).float())


def test_mix_errors():
    truth, pred = pair()
    with pytest.raises(ValueError, match="same"):
        mix_inputs(truth, pred[:, :-1], 0.5)
    with pytest.raises(ValueError, match=r"\(B, T, N\)"):
        mix_inputs(truth[0], pred[0], 0.5)
    with pytest.raises(ValueError, match="eps"):
        mix_inputs(truth, pred, 1.5)
