"""Pure parts of the rehearsal: which pg_hba lines let the clone connect, the downtime prediction."""

from __future__ import annotations

import pytest

from toolkit.rehearse import _hba_covers, predicted_downtime


@pytest.mark.parametrize(
    ("users", "address", "mask", "covered"),
    [
        (["all"], "samenet", None, True),
        (["all"], "all", None, True),
        (["gis"], "172.17.0.0", "255.255.0.0", True),
        (["other"], "samenet", None, False),  # another role
        (["all"], "127.0.0.1", "255.255.255.255", False),  # the images' default: loopback only
        (["all"], "::1", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", False),
        (["all"], "db.example", None, False),  # a host name: not judged, pg_basebackup will tell
    ],
)
def test_hba_covers(users, address, mask, covered):
    assert _hba_covers("host", users, address, mask, "gis", "172.17.0.5") is covered


def test_predicted_downtime_counts_only_phases_in_downtime():
    report = {
        "phases": [
            {"name": "clone", "seconds": 30.0, "in_downtime": False},
            {"name": "pg_upgrade", "seconds": 5.0, "in_downtime": True},
            {"name": "health", "seconds": 2.5, "in_downtime": True},
        ]
    }
    assert predicted_downtime(report, 1.5) == 9.0
    assert predicted_downtime(report, None) == 11.5  # the stop/start allowance
