"""Timestamps the API reads from PostgreSQL's JSON read exactly as DRF writes the others."""

from __future__ import annotations

import datetime

import pytest
from rest_framework.fields import DateTimeField

from api.presenters import _utc_text


@pytest.mark.parametrize(
    ("from_postgresql", "moment"),
    [
        # PostgreSQL drops a fraction's trailing zeros; DRF writes six digits.
        ("2026-11-30T12:24:11.7736+00:00", datetime.datetime(2026, 11, 30, 12, 24, 11, 773600, datetime.UTC)),
        ("2026-11-30T12:24:11.000001+00:00", datetime.datetime(2026, 11, 30, 12, 24, 11, 1, datetime.UTC)),
        # No fraction at all: none either way.
        ("2026-11-30T12:24:11+00:00", datetime.datetime(2026, 11, 30, 12, 24, 11, tzinfo=datetime.UTC)),
    ],
)
def test_a_timestamp_from_postgresql_reads_as_drf_writes_the_same_instant(from_postgresql, moment):
    assert _utc_text(from_postgresql) == DateTimeField().to_representation(moment)
