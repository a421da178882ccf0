from datetime import UTC, datetime, time

from shared.windows import CallingWindow, recipient_zones

WINDOW = CallingWindow(start=time(8), end=time(21))


def test_a_number_in_several_zones_is_called_only_when_all_are_inside():
    zones = recipient_zones("+16055550123", WINDOW, None)  # +1 605: Central and Mountain time
    assert set(zones) == {"America/North_Dakota/Center", "America/Denver"}
    # 14:00 UTC is 08:00 Central but 07:00 Denver: not yet; 15:00 UTC is 08:00 in Denver.
    now = datetime(2026, 11, 27, 14, 0, tzinfo=UTC)
    assert WINDOW.next_opening(now, zones) == datetime(2026, 11, 27, 15, 0, tzinfo=UTC)


def test_unknown_zone_falls_back_to_the_batch_zone_or_none():
    assert recipient_zones("+80012345678", WINDOW, None) == []
    assert recipient_zones("+80012345678", WINDOW, "Europe/Paris") == ["Europe/Paris"]
    explicit = CallingWindow(start=time(9), end=time(17), timezone="Asia/Riyadh")
    assert recipient_zones("+16055550123", explicit, None) == ["Asia/Riyadh"]


def test_days_of_week_and_narrowing():
    weekdays = CallingWindow(start=time(9), end=time(17), days=frozenset(range(5)))
    saturday_noon = datetime(2026, 11, 28, 17, 0, tzinfo=UTC)  # 12:00 in New York
    opening = weekdays.next_opening(saturday_noon, ["America/New_York"])
    assert opening == datetime(2026, 11, 30, 14, 0, tzinfo=UTC)  # Monday 09:00 New York
    assert weekdays.within(WINDOW)
    assert not CallingWindow(start=time(7), end=time(20)).within(WINDOW)
