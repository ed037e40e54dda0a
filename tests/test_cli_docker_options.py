"""Docker's share of the one option model, without Docker: `--superuser`/`--initdb-args` agree with
what pgleap reads from the old cluster or are refused; the confirmation line's estimate follows
`--downtime` (the Docker run of both: tests/test_cli_docker.py)."""

from __future__ import annotations

import dataclasses

import pytest

from tests.test_plan import plan
from toolkit.cli import options as cli_options
from toolkit.cli.docker_flow import check_given
from toolkit.errors import Refused


def test_the_confirmation_line_gives_the_chosen_modes_estimate():
    p = dataclasses.replace(plan(), data_kb=10 * 1024**2)  # 10 GB: the fingerprint dominates
    minimal = cli_options.upgrade_summary("c", p, "minimal")
    verified = cli_options.upgrade_summary("c", p)
    assert f"about {round(p.estimated_downtime_seconds('minimal'))} s" in minimal
    assert "--downtime minimal" in minimal
    assert f"about {round(p.estimated_downtime_seconds())} s" in verified
    unverified = cli_options.upgrade_summary("c", p, verify_data=False)
    assert f"about {round(p.estimated_downtime_seconds(verify_data=False))} s" in unverified


def test_given_superuser_and_initdb_args_must_match_what_the_cluster_says():
    p = plan()
    check_given(p, None, "")
    check_given(p, p.superuser, " ".join(p.initdb_args[:2]))
    check_given(p.to_dict(), p.superuser, p.initdb_args[0])  # a dry run's result
    with pytest.raises(Refused, match="bootstrap superuser") as exc:
        check_given(p, "someone-else", "")
    assert f"--superuser {p.superuser}" in exc.value.hint
    with pytest.raises(Refused, match="--initdb-args --locale=tr_TR") as exc:
        check_given(p, None, f"{p.initdb_args[0]} --locale=tr_TR")
    assert "drop --initdb-args" in exc.value.hint
