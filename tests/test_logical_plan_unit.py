"""The plan of `--strategy logical` (toolkit/core/logical_plan.py): what it refuses, what it carries how."""

from __future__ import annotations

import dataclasses

import pytest
from typer.testing import CliRunner

from toolkit.cli.app import app
from toolkit.core.logical_plan import LogicalFacts, plan_logical
from toolkit.db import logical as repl

FACTS = LogicalFacts(
    server_major=13,
    wal_level="logical",
    max_replication_slots=10,
    max_wal_senders=10,
    slots_in_use=0,
    senders_in_use=0,
    databases=["gis", "analytics", "postgres"],
    tables={"gis": ["public.places", "public.tracks_2024"], "analytics": ["public.regions"], "postgres": []},
    no_identity={"gis": [], "analytics": [], "postgres": []},
    unlogged={"gis": ["public.cache"]},
    matviews={"gis": ["public.place_counts"]},
    large_objects={"gis": 0, "analytics": 0, "postgres": 0},
    extension_config={"gis": ["public.spatial_ref_sys", "topology.layer", "topology.topology"]},
)


def _plan(facts=FACTS, **options):
    return plan_logical(facts, source="db", target_image="pgleap/postgis:17-3.5", target_major=17, **options)


def _checks(plan) -> set[str]:
    return {r.check for r in plan.refusals}


def test_a_ready_cluster_is_not_refused_and_says_how_each_kind_is_carried():
    plan = _plan()
    assert plan.refusals == []
    assert plan.subscriptions == 2  # databases without tables get no subscription
    assert set(plan.replicated) == {"gis", "analytics"}
    how = {(c["what"], c["database"]): c["how"] for c in plan.carried}
    assert "write pause" in how[("unlogged tables", "gis")]
    assert "refreshed" in how[("materialized views", "gis")]
    assert "not published" in how[("extension-owned tables", "gis")]
    assert "write pause" in how[("sequences", "*")]
    assert plan.to_dict()["strategy"] == "logical"


def test_wal_level_is_refused_unless_the_restart_is_allowed():
    facts = dataclasses.replace(FACTS, wal_level="replica")
    assert _checks(_plan(facts)) == {"wal_level"}
    plan = _plan(facts, restart_for_wal_level=True)
    assert plan.refusals == [] and plan.restart_for_wal_level


def test_tables_without_identity_are_listed_then_refused_or_made_full_with_consent():
    facts = dataclasses.replace(FACTS, no_identity={"gis": ["public.notes"], "analytics": []})
    refused = _plan(facts)
    assert _checks(refused) == {"replica_identity"}
    assert "gis: public.notes" in refused.refusals[0].message
    assert "--replica-identity-full" in refused.refusals[0].hint
    consented = _plan(facts, replica_identity_full=True)
    assert consented.refusals == [] and consented.identity_full == {"gis": ["public.notes"]}


def test_too_few_slots_or_senders_are_refused_with_the_number_needed():
    facts = dataclasses.replace(FACTS, max_replication_slots=4, slots_in_use=1)
    plan = _plan(facts)
    assert _checks(plan) == {"slots"}
    assert "need 4" in plan.refusals[0].message and "at least 5" in plan.refusals[0].hint


def test_large_objects_are_refused_and_a_same_or_older_major_too():
    facts = dataclasses.replace(FACTS, large_objects={"gis": 3})
    assert _checks(_plan(facts)) == {"large_objects"}
    assert _checks(plan_logical(FACTS, source="db", target_image="x", target_major=13)) == {"major"}


def test_md5_password_roles_are_refused_by_name_with_the_rehash():
    """The new image's pg_hba.conf asks for scram-sha-256: a role carried with an md5 hash could not
    log in after the switch. The plan names them and says how to re-hash on the old server."""
    plan = _plan(dataclasses.replace(FACTS, md5_roles=["app", "report"]))
    assert _checks(plan) == {"md5_passwords"}
    assert "app, report" in plan.refusals[0].message
    assert "password_encryption = 'scram-sha-256'" in plan.refusals[0].hint
    assert "ALTER ROLE" in plan.refusals[0].hint
    # read from pg_authid: login roles only, pgleap's own superuser gets the environment's password
    assert "left(rolpassword, 3) = 'md5'" in repl.MD5_ROLES and "rolcanlogin" in repl.MD5_ROLES
    assert "current_user" in repl.MD5_ROLES


def test_publications_list_tables_never_all_tables():
    """FOR ALL TABLES would publish spatial_ref_sys, which the new PostGIS already fills (a duplicate
    key in the initial copy): the queries keep extension-owned tables out."""
    assert "deptype = 'e'" in repl.TABLES and "NOT EXISTS" in repl.TABLES
    assert "relpersistence = 'p'" in repl.TABLES  # unlogged tables are copied in the pause instead


def test_conninfo_quotes_values():
    info = repl.conninfo("10.0.0.2", 5432, "gis", "pa ss'w\\d", "my db")
    assert "password='pa ss\\'w\\\\d'" in info and "dbname='my db'" in info


@pytest.mark.parametrize("value", ["bogus", "LOGICAL"])
def test_an_unknown_strategy_is_a_usage_error(value):
    result = CliRunner().invoke(app, ["upgrade", "docker", "-c", "db", "--to", "x", "--strategy", value])
    assert result.exit_code == 2
    assert "--strategy" in result.output


def test_logical_needs_a_container_not_a_bare_volume():
    result = CliRunner().invoke(
        app, ["upgrade", "docker", "--volume", "v", "--from", "x", "--to", "y", "--strategy", "logical"]
    )
    assert result.exit_code == 2
    assert "--container" in result.output
