"""The engine's data order: every example once per epoch, a pure function of (seed, epoch),
and with length grouping batches that pad less."""

import random

import pytest

from iea.models.finetune import GROUP_BLOCK, epoch_steps


def _lengths(n, seed=0):
    rng = random.Random(seed)
    return [rng.choice([120, 180, 240, 300]) + rng.randrange(20) for _ in range(n)]


@pytest.mark.parametrize("group", [False, True])
@pytest.mark.parametrize("n, per_step", [(37, 4), (8, 8), (5, 8), (200, 3)])
def test_every_example_once_in_ceil_n_over_steps(n, per_step, group):
    steps = epoch_steps(_lengths(n), per_step, seed=3, epoch=1, group=group)
    assert len(steps) == -(-n // per_step)
    assert sorted(i for s in steps for i in s) == list(range(n))
    # only one step may be short: the shuffled order's last, wherever it lands
    assert sum(len(s) < per_step for s in steps) == (1 if n % per_step else 0)


@pytest.mark.parametrize("group", [False, True])
def test_pure_function_of_seed_and_epoch(group):
    lengths = _lengths(64)
    a = epoch_steps(lengths, 4, seed=1, epoch=2, group=group)
    assert a == epoch_steps(lengths, 4, seed=1, epoch=2, group=group)
    assert a != epoch_steps(lengths, 4, seed=1, epoch=3, group=group)
    assert a != epoch_steps(lengths, 4, seed=2, epoch=2, group=group)


def test_grouping_pads_less_and_batches_change_between_epochs():
    lengths = _lengths(400)

    def padded(steps):
        return sum(max(lengths[i] for i in s) * len(s) for s in steps)

    plain = epoch_steps(lengths, 8, seed=0, epoch=0, group=False)
    grouped = epoch_steps(lengths, 8, seed=0, epoch=0, group=True)
    real = sum(lengths)
    assert padded(grouped) - real < 0.3 * (padded(plain) - real)
    # blocks of GROUP_BLOCK steps: the batches differ from one epoch to the next
    again = epoch_steps(lengths, 8, seed=0, epoch=1, group=True)
    assert {tuple(sorted(s)) for s in grouped} != {tuple(sorted(s)) for s in again}
    assert GROUP_BLOCK > 1
    # and no step holds only the longest examples every time: the steps are shuffled
    assert grouped[0] != sorted(range(400), key=lambda i: -lengths[i])[:8]
