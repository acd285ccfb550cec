"""Progress of long jobs: rate without the compilation, ETA, when lines come, the tqdm bar."""

import io

import pytest

from sde_jax import progress


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


@pytest.fixture
def lines(monkeypatch):
    logged = []
    monkeypatch.setattr(progress.logging, "info", lambda msg, *args: logged.append(msg % args))
    return logged


def test_rate_leaves_out_the_first_update_and_eta_is_remaining_over_rate(lines):
    clock = FakeClock()
    p = progress.Progress("train", 1500, interactive=False, clock=clock)
    assert p.rate is None and p.eta_s is None
    clock.now += 95.0  # the first call compiles
    p.update(10)
    assert p.rate is None and p.eta_s is None and lines == []
    clock.now += 49.0
    p.update(500)
    assert p.rate == pytest.approx(10.0)  # 490 steps in 49 s, the compile left out
    assert p.eta_s == pytest.approx(100.0)
    assert lines == ["train: step 500/1500 (33%), 10.0 steps/s, ETA 1m40s"]


def test_lines_at_the_second_update_then_every_log_every_s_and_a_final_line(lines):
    clock = FakeClock()
    with progress.Progress("train", 100, interactive=False, clock=clock, log_every_s=30) as p:
        for step in range(1, 101):
            clock.now += 60.0 if step == 1 else 1.0
            p.update(step)
    assert [line.split(",")[0] for line in lines[:-1]] == [
        "train: step 2/100 (2%)",
        "train: step 32/100 (32%)",
        "train: step 62/100 (62%)",
        "train: step 92/100 (92%)",
    ]
    assert "1.0 steps/s, ETA 1m08s" in lines[1]
    assert lines[-1] == "train: 100/100 in 2m39s (1.0 steps/s)"


def test_resumed_jobs_slow_units_unknown_totals_and_early_stops(lines):
    clock = FakeClock()
    p = progress.Progress("bits/dim", 50, unit="unit", initial=20, interactive=False, clock=clock)
    clock.now += 300.0
    p.update(21)
    clock.now += 40.0
    p.update(22, note="running mean 3.4512")
    assert lines == ["bits/dim: unit 22/50 (44%), 40.0 s/unit, ETA 18m40s, running mean 3.4512"]
    p.close()
    p.close()  # once only
    assert lines[1:] == ["bits/dim: stopped at 22/50 after 5m40s (40.0 s/unit)"]

    lines.clear()
    p = progress.Progress("Inception features", None, unit="batch", interactive=False, clock=clock)
    p.update(1)
    clock.now += 0.5
    p.update(3)
    p.close()
    assert lines == [
        "Inception features: batch 3, 4.0 batches/s",
        "Inception features: 3 in 0s (4.0 batches/s)",
    ]

    lines.clear()
    with progress.Progress("train", 6, interactive=False, clock=clock) as p:
        p.update(8)  # one call past the end counts as the end
    assert p.position == 6 and lines == ["train: 6/6 in 0s"]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (12.4, "12s"), (59.6, "1m00s"), (102, "1m42s"), (3599, "59m59s"), (7500, "2h05m")],
)
def test_format_seconds(seconds, text):
    assert progress.format_seconds(seconds) == text


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"total": 0}, r"total must be an integer >= 1, got 0"),
        ({"total": 5, "initial": 6}, r"initial must be an integer in \[0, 5\], got 6"),
        ({"total": 5, "initial": -1}, r"initial must be an integer in \[0, 5\], got -1"),
        ({"total": 5, "log_every_s": 0.0}, r"log_every_s must be .*> 0.*got 0.0"),
        ({"total": 5, "unit": ""}, r"unit must be a non-empty string, got ''"),
    ],
)
def test_argument_errors_name_the_argument_value_and_range(kwargs, message):
    with pytest.raises(ValueError, match=message):
        progress.Progress("train", **{"interactive": False, **kwargs})


def test_errors_of_update_and_format_seconds():
    p = progress.Progress("train", 10, interactive=False)
    p.update(5)
    with pytest.raises(ValueError, match=r"position must be an integer >= 5, got 4"):
        p.update(4)
    with pytest.raises(ValueError, match=r"seconds must be >= 0, got -1.0"):
        progress.format_seconds(-1)


def test_interactive_mode_draws_a_tqdm_bar_from_the_first_update_and_logs_nothing(lines):
    out, clock = io.StringIO(), FakeClock()
    p = progress.Progress("train", 1500, initial=200, interactive=True, clock=clock, file=out)
    assert p._bar is None  # created lazily, after the compile
    p.update(210)
    assert (p._bar.total, p._bar.initial, p._bar.n) == (1500, 210, 210)
    p.update(300, note="loss 0.1")
    assert p._bar.n == 300
    progress.announce("Sampling %d images at step %d...", 64, 300)
    p.close()
    assert lines == ["Sampling 64 images at step 300..."]  # the announcement only
    assert "train" in out.getvalue() and "300/1500" in out.getvalue()
    assert progress._open_bars == []


def test_announce_first_call_logs_once(lines):
    calls = []
    fn = progress.announce_first_call(lambda x: calls.append(x) or x, "Compiling the %s...", "step")
    assert [fn(1), fn(2)] == [1, 2] and calls == [1, 2]
    assert lines == ["Compiling the step..."]
