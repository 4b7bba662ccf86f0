"""λ schedules: exact at their ends, the right shape in between, custom functions from Python."""

from __future__ import annotations

import pytest

from criticrm.training.schedules import BUILTIN_SCHEDULES, LambdaContext, LambdaSchedule

TOTAL = 37


def values(schedule: LambdaSchedule, total: int = TOTAL) -> list[float]:
    return [schedule(step, total) for step in range(total)]


@pytest.mark.parametrize("name", ["cosine", "linear", "step"])
def test_decaying_schedules_are_exact_at_both_ends_and_never_increase(name):
    series = values(LambdaSchedule(name, start=0.9, end=0.1, num_epochs=3))
    assert series[0] == 0.9 and series[-1] == 0.1
    assert all(a >= b for a, b in zip(series, series[1:], strict=False))


def test_reverse_increases_from_end_to_start_and_constant_stays():
    reverse = values(LambdaSchedule("reverse", start=0.9, end=0.1))
    assert reverse[0] == 0.1 and reverse[-1] == 0.9
    assert all(a <= b for a, b in zip(reverse, reverse[1:], strict=False))
    assert set(values(LambdaSchedule("constant", start=0.5, end=0.1))) == {0.5}


def test_shapes_in_between():
    linear, cosine = LambdaSchedule("linear", 1.0, 0.0), LambdaSchedule("cosine", 1.0, 0.0)
    assert linear(50, 101) == pytest.approx(0.5) and cosine(50, 101) == pytest.approx(0.5)
    assert cosine(25, 101) > linear(25, 101)  # cosine holds λ high longer at the start ...
    assert cosine(75, 101) < linear(75, 101)  # ... and low longer at the end


def test_step_schedule_has_one_value_per_round():
    by_epoch = values(LambdaSchedule("step", 0.9, 0.1, num_epochs=3), total=30)
    assert by_epoch[:10] == [0.9] * 10 and by_epoch[10:20] == [pytest.approx(0.5)] * 10 and by_epoch[20:] == [0.1] * 10
    five = values(LambdaSchedule("step", 0.8, 0.0, rounds=5), total=20)
    assert len(set(five)) == 5 and five[0] == 0.8 and five[-1] == 0.0


@pytest.mark.parametrize("name", BUILTIN_SCHEDULES)
def test_single_step_runs_use_the_first_value(name):
    first = {"reverse": 0.1}.get(name, 0.9)
    assert LambdaSchedule(name, 0.9, 0.1)(0, 1) == first


def half_then_zero(context: LambdaContext) -> float:
    return 0.5 if context.progress < 0.5 else 0.0


def test_custom_schedule_from_python():
    schedule = LambdaSchedule(f"{__name__}:half_then_zero")
    series = values(schedule, total=11)
    assert series[0] == 0.5 and series[-1] == 0.0 and series[5] == 0.0 and series[4] == 0.5


def test_bad_schedules_are_refused():
    with pytest.raises(ValueError, match="unknown λ schedule"):
        LambdaSchedule("exponential")
    with pytest.raises(ValueError, match="cannot import"):
        LambdaSchedule("no_such_module_xyz:f")
    with pytest.raises(ValueError, match="λ must be in"):
        LambdaSchedule(f"{__name__}:out_of_range")(0, 10)


def out_of_range(context: LambdaContext) -> float:
    return 1.5
