"""xcaliber.lib.activity: background work waits while uploads keep arriving, no longer than its deadline."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from xcaliber.lib import activity
from xcaliber.lib.activity import QUIET_SECONDS, ActivityMark


class FakeClock:
    """``time.time`` and ``time.sleep`` for the module; uploads "start" (the mark's mtime moves) until
    ``arriving_until``."""

    def __init__(self, mark: ActivityMark, *, now: float, arriving_until: float) -> None:
        self.mark, self.now, self.arriving_until = mark, now, arriving_until
        self.sleeps = 0
        self._upload_starts()

    def _upload_starts(self) -> None:
        if self.now <= self.arriving_until:
            os.utime(self.mark.path, (self.now, self.now))

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        self.now += seconds
        self._upload_starts()


@pytest.fixture
def mark(tmp_path: Path) -> ActivityMark:
    return ActivityMark(tmp_path / "run" / "uploads-arriving")


def _clock(monkeypatch: pytest.MonkeyPatch, mark: ActivityMark, **kwargs: float) -> FakeClock:
    mark.touch()
    clock = FakeClock(mark, **kwargs)
    monkeypatch.setattr(activity, "time", clock)  # the module's clock only, not the test runner's
    return clock


def test_no_upload_ever_is_quiet_and_the_first_touch_makes_the_mark(mark: ActivityMark) -> None:
    assert mark.seconds_since() == float("inf")
    mark.touch()  # its folder did not exist either
    assert mark.path.exists()
    assert mark.seconds_since() < 60


def test_quiet_already_means_no_wait(monkeypatch: pytest.MonkeyPatch, mark: ActivityMark) -> None:
    clock = _clock(monkeypatch, mark, now=1000.0, arriving_until=1000.0)
    clock.now += QUIET_SECONDS  # the last upload started a quiet interval ago

    assert mark.wait_until_quiet(deadline=2000.0) == 0.0
    assert clock.sleeps == 0


def test_waits_while_uploads_keep_starting_then_a_quiet_interval(
    monkeypatch: pytest.MonkeyPatch, mark: ActivityMark
) -> None:
    clock = _clock(monkeypatch, mark, now=1000.0, arriving_until=1003.0)

    waited = mark.wait_until_quiet(deadline=2000.0)

    assert clock.now >= 1003.0 + QUIET_SECONDS - 1e-6  # the burst, then the quiet interval (mtimes: ns)
    assert clock.now < 1003.0 + QUIET_SECONDS + activity.POLL_SECONDS + 1e-6  # checked at least that often
    assert waited == pytest.approx(clock.now - 1000.0)


def test_a_stream_that_never_stops_delays_the_work_until_its_deadline_only(
    monkeypatch: pytest.MonkeyPatch, mark: ActivityMark
) -> None:
    clock = _clock(monkeypatch, mark, now=1000.0, arriving_until=float("inf"))

    assert mark.wait_until_quiet(deadline=1007.5) == pytest.approx(7.5, abs=0.002)
    assert clock.now == pytest.approx(1007.5, abs=0.002)
