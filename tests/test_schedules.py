"""Schedules: which steps they select, their reprs and argument checks."""

import numpy as np
import pytest

from topotrace.instrument.schedules import at_steps, every, log_spaced, per_epoch


def _selected(schedule, last):
    return [s for s in range(last + 1) if schedule(s)]


def test_every():
    assert _selected(every(10), 35) == [0, 10, 20, 30]
    assert _selected(every(3, start=5), 14) == [5, 8, 11, 14]
    assert repr(every(10)) == "every(10)"
    assert repr(every(3, start=5)) == "every(3, start=5)"


def test_per_epoch():
    assert _selected(per_epoch(47), 200) == [0, 47, 94, 141, 188]
    assert _selected(per_epoch(10, every=2), 60) == [0, 20, 40, 60]
    assert repr(per_epoch(47)) == "per_epoch(47)"
    assert repr(per_epoch(10, every=2)) == "per_epoch(10, every=2)"


def test_at_steps():
    s = at_steps([5, 0, 100, np.int64(7)])
    assert _selected(s, 200) == [0, 5, 7, 100]
    assert repr(s) == "at_steps([0, 5, 7, 100])"
    assert repr(at_steps(range(20))) == "at_steps([0, 1, 2, 3, ..., 19])"


@pytest.mark.parametrize(("total", "n"), [(2000, 50), (300, 30), (100_000, 40), (1, 2), (10, 50)])
def test_log_spaced_covers_ends_and_count(total, n):
    """Step 0, step 1 and the last step are in; about n steps; dense early, sparse late."""
    steps = _selected(log_spaced(total, n), total)
    assert steps[0] == 0 and steps[-1] == total
    assert 1 in steps
    expected = min(n, total + 1)
    assert expected <= len(steps) <= expected + 3
    gaps = np.diff(steps)
    assert (gaps >= 1).all() and (np.diff(gaps) >= -1).all()  # gaps never shrink (up to rounding)


def test_log_spaced_is_geometric_late():
    """Past the dense start, consecutive steps keep a near-constant ratio."""
    steps = np.array(_selected(log_spaced(100_000, 40), 100_000))
    late = steps[steps >= 100]
    ratios = late[1:] / late[:-1]
    np.testing.assert_allclose(ratios, np.median(ratios), rtol=0.05)
    assert repr(log_spaced(100_000, 40)) == "log_spaced(100000, 40)"


def test_argument_checks():
    with pytest.raises(ValueError, match=r"The 'n' parameter must be an int >= 1. Got 0 instead."):
        every(0)
    with pytest.raises(TypeError, match=r"The 'n' parameter must be an int. Got float 2.5 instead."):
        every(2.5)
    with pytest.raises(ValueError, match="'total_steps'"):
        log_spaced(0, 10)
    with pytest.raises(ValueError, match="'n'"):
        log_spaced(100, 1)
    with pytest.raises(TypeError, match="'steps'"):
        at_steps(5)
    with pytest.raises(ValueError, match="'steps'"):
        at_steps([-1])
    with pytest.raises(ValueError, match="'steps_per_epoch'"):
        per_epoch(0)
