"""Large objects under `--strategy logical`: not replicated, copied in the write pause with their
owner and privileges (GRANT … ON LARGE OBJECT), and the proof's large-object entry covers both."""

from __future__ import annotations

import pytest

from toolkit.db.logical_switch import copy_large_objects
from toolkit.db.verify import _large_objects

pytestmark = [pytest.mark.docker, pytest.mark.slow]

ROLES = ["CREATE ROLE docs", "CREATE ROLE readers", "CREATE ROLE editor"]
OBJECTS = [
    # owned by docs, read by readers, written by editor who may pass it on, and did (grantor editor)
    "SELECT lo_from_bytea(1001, 'granted')",
    "ALTER LARGE OBJECT 1001 OWNER TO docs",
    "GRANT SELECT ON LARGE OBJECT 1001 TO readers",
    "GRANT UPDATE ON LARGE OBJECT 1001 TO editor WITH GRANT OPTION",
    "SET ROLE editor",
    "GRANT UPDATE ON LARGE OBJECT 1001 TO readers",
    "RESET ROLE",
    "SELECT lo_from_bytea(1002, 'default privileges')",  # lomacl NULL: the owner's, nobody else's
    "SELECT lo_from_bytea(1003, 'no privileges at all')",  # an empty ACL, not NULL
    "ALTER LARGE OBJECT 1003 OWNER TO docs",
    "REVOKE ALL ON LARGE OBJECT 1003 FROM docs",
    "GRANT SELECT ON LARGE OBJECT 1002 TO PUBLIC",
]
ACLS = (
    "SELECT oid::bigint, pg_get_userbyid(lomowner), "
    "(SELECT array_agg(a::text ORDER BY a::text) FROM unnest(lomacl) a), lomacl IS NULL "
    "FROM pg_largeobject_metadata ORDER BY 1"
)


def test_large_objects_carry_owner_and_privileges_and_the_proof_sees_them(old_db_factory, capsys):
    src = old_db_factory("13-3.1", seed_data=False)
    dst = old_db_factory("17-3.5", seed_data=False)
    a, b = src.server(), dst.server()
    for server, statements in ((a, ROLES + OBJECTS), (b, ROLES)):
        with server.connect(src.superuser) as conn:
            for statement in statements:
                conn.execute(statement)
    with b.connect(src.superuser) as conn:  # an older copy on the new side: replaced whole
        conn.execute("SELECT lo_from_bytea(1001, 'stale')")
    assert copy_large_objects(a, b, src.superuser) == 3
    assert b.query(src.superuser, ACLS) == a.query(src.superuser, ACLS)
    with a.connect(src.superuser) as one, b.connect(src.superuser) as other:
        assert _large_objects(one) == _large_objects(other)
        proof = _large_objects(other)
        for change, undo in [
            ("REVOKE SELECT ON LARGE OBJECT 1001 FROM readers", "GRANT SELECT ON LARGE OBJECT 1001 TO readers"),
            ("GRANT SELECT ON LARGE OBJECT 1003 TO docs", "REVOKE ALL ON LARGE OBJECT 1003 FROM docs"),
            ("ALTER LARGE OBJECT 1001 OWNER TO editor", None),  # last: it rewrites the grantors too
        ]:  # fmt: skip
            other.execute(change)
            assert _large_objects(other) != proof, f"the proof does not see: {change}"
            if undo:
                other.execute(undo)
                assert _large_objects(other) == proof, f"undone, still different: {undo}"
