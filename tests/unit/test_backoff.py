import datetime

from domains.backoff import retry_delay


def test_backoff_doubles_from_one_minute_and_caps_at_one_day():
    minutes = [retry_delay(n) / datetime.timedelta(minutes=1) for n in range(1, 15)]
    assert minutes == [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 1440, 1440, 1440]


def test_no_failure_means_no_wait():
    assert retry_delay(0) == datetime.timedelta(0)


def test_a_very_long_failure_streak_stays_at_one_day():
    assert retry_delay(10_000) == datetime.timedelta(days=1)
