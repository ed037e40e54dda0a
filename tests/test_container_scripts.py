"""The in-container scripts on their own, as the Kubernetes Job runs them (no engine around them)."""

from __future__ import annotations

import pytest

from toolkit.core.facts import parse_results
from toolkit.core.paths import OLD_ROOT, VOLUME
from toolkit.docker.refs import VolumeRef

pytestmark = pytest.mark.docker


def test_upgrade_sh_reads_initdb_options_from_the_old_cluster(runtime, image_names, old_db_factory):
    """Without PGLEAP_INITDB_ARGS/PGLEAP_SUPERUSER (what a Job gets), checksums, locale and the
    OID-10 role come from the stopped old cluster itself; 18 would otherwise turn checksums on."""
    db = old_db_factory("13-3.1", superuser="geo", rows=300)
    rt = runtime
    rt.stop_container(db.name)
    scratch = rt.ensure_scratch(f"pgleap-old-binaries-{db.volume}")
    rt.collect(image_names["13-3.1"], scratch, "999:999")
    env = {
        "PGLEAP_ACTION": "upgrade", "PGLEAP_VOLUME": VOLUME, "PGLEAP_OLD_ROOT": OLD_ROOT,
        "PGLEAP_OLD_REL": "", "PGLEAP_NEW_REL": "18/docker", "PGLEAP_OLD_MAJOR": "13",
        "PGLEAP_NEW_MAJOR": "18", "PGLEAP_MODE": "link",
    }  # fmt: skip
    from docker.types import Mount

    volume = VolumeRef("volume", db.volume)
    out = rt.run_script(
        image_names["18-3.x"], "upgrade.sh", env,
        [volume.mount(VOLUME), Mount(target=OLD_ROOT, source=scratch, type="volume")], user="999:999",
    )  # fmt: skip
    results = dict(parse_results(out))
    assert results["new_pgdata"] == f"{VOLUME}/18/docker"
    new = rt.probe_data(image_names["18-3.x"], volume, "18/docker")
    assert new.pg_version == 18 and new.cleanly_shut_down
    assert not new.checksums  # the old cluster had none; initdb 18 would have turned them on
    bindir = rt.probe_image(image_names["18-3.x"]).bindir
    with rt.temp_server(image_names["18-3.x"], bindir, volume, "18/docker", uid=999, gid=999,
                        superuser="geo", read_only=True, label="new cluster") as server:  # fmt: skip
        assert server.query("postgres", "SELECT rolname FROM pg_authid WHERE oid = 10") == [("geo",)]
        assert server.query("geo", "SELECT count(*) FROM places") == [(300,)]
        (collate,) = server.query(
            "postgres", "SELECT datcollate FROM pg_database WHERE datname = 'template1'"
        )[0]
        assert collate == "en_US.utf8"
