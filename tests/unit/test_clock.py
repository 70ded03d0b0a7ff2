"""RFC 3339 timestamps as every component reads and writes them: strictly RFC 3339 in, four-digit
years out (so stored strings sort like the instants), and a ValueError that never echoes the value."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gdpr_core.clock import format_rfc3339, parse_rfc3339


@pytest.mark.parametrize(("text", "instant"), [
    ("2018-10-25T23:08:51.382Z", datetime(2018, 10, 25, 23, 8, 51, 382000, tzinfo=UTC)),
    ("2026-12-04t05:00:00z", datetime(2026, 12, 4, 5, tzinfo=UTC)),          # lower case is RFC 3339
    ("2026-12-04 05:00:00Z", datetime(2026, 12, 4, 5, tzinfo=UTC)),          # the space of its note
    ("2026-12-04T05:00:00.5-05:30", datetime(2026, 12, 4, 10, 30, 0, 500000, tzinfo=UTC)),
    ("2026-12-04T05:00:00.123456789+01:00", datetime(2026, 12, 4, 4, 0, 0, 123456, tzinfo=UTC)),
    ("0999-01-01T00:00:00Z", datetime(999, 1, 1, tzinfo=UTC)),
])
def test_rfc3339_forms_are_read_as_their_instant(text, instant):
    assert parse_rfc3339(text) == instant


@pytest.mark.parametrize("text", [
    "2026-W49-5T05:00:00Z", "20261204T050000Z", "2026-12-04T05Z", "2026-12-04T05:00:00,5Z",
    "2026-12-04T05:00:00+0000", "2026-12-04T05:00:00+01:00:30", "2026-12-04T05:00:00.Z",
    "2026-02-30T00:00:00Z", "2026-12-04T24:00:00Z",
    "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00",  # outside datetime's range once in UTC
    "2026-12-01", "yesterday", "", " 2026-12-04T05:00:00Z",
])
def test_other_iso_forms_and_impossible_instants_are_refused_without_echo(text):
    with pytest.raises(ValueError, match="not an RFC 3339 timestamp") as info:
        parse_rfc3339(text)
    assert text.strip() == "" or text not in str(info.value)


def test_a_timestamp_without_a_zone_says_so():
    with pytest.raises(ValueError, match="without a UTC offset"):
        parse_rfc3339("2026-12-01T00:00:00")
    for value in (None, 3, ["2026-12-01T00:00:00Z"]):
        with pytest.raises(ValueError, match="not an RFC 3339 timestamp"):
            parse_rfc3339(value)


def test_years_below_1000_keep_four_digits_and_sort_before_later_ones():
    early, late = datetime(999, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC)
    assert format_rfc3339(early) == "0999-01-01T00:00:00.000Z"
    assert format_rfc3339(early) < format_rfc3339(late)


@given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
                    timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)),
                                               timezone(-timedelta(hours=8))])))
def test_format_then_parse_gives_the_instant_at_millisecond_precision(when):
    text = format_rfc3339(when)
    assert parse_rfc3339(text) == when.astimezone(UTC).replace(microsecond=when.microsecond // 1000 * 1000)
    assert len(text) == 24
