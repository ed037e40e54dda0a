"""Pure parts of the rehearsal: which pg_hba lines let the clone connect, the downtime prediction."""

from __future__ import annotations

import pytest

from toolkit.db.replication import _hba_covers
from toolkit.docker.rehearse import predicted_downtime


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


class _Conn:
    """Answers replication_problems' queries for a role that may not replicate."""

    def __init__(self, role: str) -> None:
        self.role = role

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def execute(self, query: str, params=None):
        answers = {
            "rolreplication": [(False, self.role)],
            "wal_level": [("replica",)],
            "max_wal_senders": [("10",)],
            "FROM pg_hba_file_rules WHERE error IS NULL AND 'replication'": [],
            "auth_method": [("scram-sha-256",)],
        }
        rows = next(v for k, v in answers.items() if k in query)
        return type(
            "Cursor", (), {"fetchone": lambda s: rows[0] if rows else None, "fetchall": lambda s: rows}
        )()


class _Server:
    def __init__(self, role: str) -> None:
        self.role = role

    def connect(self, db: str) -> _Conn:
        return _Conn(self.role)


def test_rehearsal_hints_quote_role_names():
    from toolkit.db.replication import replication_problems

    problems = replication_problems(_Server('Geo Admin"x'), "172.17.0.5")
    assert any('ALTER ROLE "Geo Admin""x" REPLICATION' in p for p in problems), problems
    assert any('`host replication "Geo Admin"x" samenet scram-sha-256`' in p for p in problems), problems
    plain = replication_problems(_Server("gis"), "172.17.0.5")
    assert any('ALTER ROLE "gis" REPLICATION' in p for p in plain) and any(
        "replication gis samenet" in p for p in plain
    )
