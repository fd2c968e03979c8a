"""The sign-in throttle's rule: an attempt counts from its start; a right
password takes its count back and clears the failures."""

import pytest

from webui import throttle
from webui.throttle import SignInThrottle


@pytest.fixture
def clock(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(throttle.time, "monotonic", lambda: now[0])
    return now


def test_attempts_in_flight_count_before_any_is_checked(clock):
    t = SignInThrottle(window=60, allowed=3)
    assert [t.begin("1.2.3.4", "alice") for _ in range(4)] == [0, 0, 0, 61]
    assert t.begin("1.2.3.4", "bob") == 0 and t.begin("5.6.7.8", "alice") == 0


def test_a_refused_attempt_is_not_counted_and_the_window_slides(clock):
    t = SignInThrottle(window=60, allowed=2)
    t.begin("a", "alice")
    clock[0] += 30
    t.begin("a", "alice")
    for _ in range(5):
        assert t.begin("a", "alice") > 0
    clock[0] += 30.5  # the first attempt leaves the window, the refused ones were never in it
    assert t.begin("a", "alice") == 0
    assert t.begin("a", "alice") > 0


def test_a_right_password_gives_its_count_back_and_clears_failures(clock):
    t = SignInThrottle(window=60, allowed=3)
    for _ in range(2):
        t.begin("a", "alice")  # failed
    for _ in range(10):
        assert t.begin("a", "alice") == 0
        t.succeeded("a", "alice")
    assert [t.begin("a", "alice") for _ in range(4)] == [0, 0, 0, 61]


def test_memory_is_bounded_under_a_spray_of_names(clock, monkeypatch):
    monkeypatch.setattr(throttle, "MAX_KEYS", 100)
    t = SignInThrottle()
    for i in range(1000):
        t.begin("a", f"user{i}")
    assert len(t._attempts) == 100
