"""The adjustments PostgreSQL's own cross-version test makes before upgrading a 13 regression
database to 16+ (src/test/perl/PostgreSQL/Test/AdjustUpgrade.pm, adjust_database_contents),
plus dropping what references the test libraries, which the stock new image does not have.

Kept as data: database -> statements, with the old-major range each group applies to.
"""

from __future__ import annotations

# Every function whose library is one of the test libraries, with what depends on it
# (types such as `widget`, triggers, operators): the new image cannot load them.
DROP_TEST_LIBRARY_FUNCTIONS = r"""
DO $adjust$
DECLARE fn regprocedure;
BEGIN
  FOR fn IN SELECT p.oid::regprocedure FROM pg_proc p
            WHERE p.probin ~ '(^|/)(regress|autoinc|refint)(\.so)?$' ORDER BY p.oid
  LOOP
    IF EXISTS (SELECT 1 FROM pg_proc WHERE oid = fn::oid) THEN
      EXECUTE format('DROP FUNCTION %s CASCADE', fn);
    END IF;
  END LOOP;
END
$adjust$
"""

# (first old major, last old major, database, statements)
ADJUSTMENTS: list[tuple[int, int, str, list[str]]] = [
    # AdjustUpgrade.pm: "stuff not supported from release 16" (old 12..15)
    (12, 15, "regression", [
        "ALTER TABLE public.tab_core_types DROP COLUMN aclitem",  # aclitem format changed in 16
        "DROP TABLE public.gtest_normal_child",  # child tables with locally generated columns
        "DROP TABLE public.gtest_normal_child2",
    ]),
    # AdjustUpgrade.pm: "stuff not supported from release 14" (postfix operators)
    (0, 13, "regression", [
        "DROP OPERATOR #@# (bigint, NONE)",
        "DROP OPERATOR #%# (bigint, NONE)",
        "DROP OPERATOR IF EXISTS !=- (bigint, NONE)",
        "DROP OPERATOR IF EXISTS #@%# (bigint, NONE)",
    ]),
    # Not in AdjustUpgrade.pm (its new build has the libraries): the stock images do not.
    (0, 99, "regression", [DROP_TEST_LIBRARY_FUNCTIONS]),
]  # fmt: skip


def statements(old_major: int) -> list[tuple[str, str]]:
    """(database, statement) for an old major, in order."""
    return [
        (db, stmt) for first, last, db, stmts in ADJUSTMENTS if first <= old_major <= last for stmt in stmts
    ]


def adjust(db, old_major: int | None = None, *, keep: tuple[str, ...] = ()) -> None:
    """Apply the adjustments to a running corpus database (tests.conftest.OldDatabase).

    `keep`: skip the statements that mention any of these words (to leave one problem in).
    """
    from toolkit.docker import images

    major = old_major or images.spec_for(db.tag).pg
    server = db.server()
    for dbname, stmt in statements(major):
        if any(word in stmt for word in keep):
            continue
        with server.connect(dbname) as conn:
            conn.execute(stmt)
