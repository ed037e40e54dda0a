"""`pgleap rehearse dump`: the CI gate, from a dump of the seeded demo database, in-process and
from pgleap's own image through the mounted Docker socket. JUnit output parsed and counted."""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import tarfile
import xml.etree.ElementTree as ET

import pytest
from typer.testing import CliRunner

from toolkit.cli.app import app

pytestmark = [pytest.mark.docker, pytest.mark.slow]

ROLE = "org.pgleap.role=rehearse-dump"


def _dump(db, tmp_path) -> dict:
    """Custom-format dump of the main database, a plain --create dump of the second, the roles."""
    c = db.runtime.docker.containers.get(db.name)
    files = {
        "custom": (["pg_dump", "-U", db.superuser, "-Fc", db.superuser], "main.dump"),
        "plain": (["pg_dump", "-U", db.superuser, "--create", "analytics"], "analytics.sql"),
        "roles": (["pg_dumpall", "-U", db.superuser, "--roles-only"], "roles.sql"),
    }
    out = {}
    for key, (cmd, name) in files.items():
        code, data = c.exec_run(cmd, user="postgres", stderr=False)
        assert code == 0, data[-500:]
        (tmp_path / name).write_bytes(data)
        out[key] = tmp_path / name
    out["gz"] = tmp_path / "analytics.sql.gz"
    out["gz"].write_bytes(gzip.compress(out["plain"].read_bytes()))
    # A directory archive (-Fd), copied out of the container.
    code, data = c.exec_run(
        ["pg_dump", "-U", db.superuser, "-Fd", "-f", "/tmp/main.dir", db.superuser], user="postgres"
    )
    assert code == 0, data[-500:]
    stream, _ = c.get_archive("/tmp/main.dir")
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
        tar.extractall(tmp_path, filter="data")
    out["directory"] = tmp_path / "main.dir"
    return out


def _junit(path) -> tuple[ET.Element, list[ET.Element]]:
    suite = ET.parse(path).getroot().find("testsuite")
    return suite, suite.findall("testcase")


def _leftovers(rt) -> list[str]:
    return [c.name for c in rt.docker.containers.list(all=True, filters={"label": ROLE})] + [
        v.name for v in rt.docker.volumes.list(filters={"label": ROLE})
    ]


def test_dump_of_the_demo_database_goes_13_to_17(runtime, image_names, old_db_factory, tmp_path):
    db = old_db_factory("13-3.1", rows=300)
    files = _dump(db, tmp_path)
    junit = tmp_path / "junit.xml"
    result = CliRunner().invoke(app, [
        "rehearse", "dump", str(files["custom"]), str(files["gz"]), "--roles", str(files["roles"]),
        "--from", image_names["13-3.1"], "--to", image_names["17-3.5"], "--junit", str(junit), "-o", "json",
        "--keep",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output[-3000:]
    report = json.loads(result.stdout)
    assert report["verdict"] == "go"
    assert [f["kind"] for f in report["loaded"]] == ["roles", "custom", "sql.gz"]
    kept = runtime.docker.containers.get(report["kept"]["container"])
    try:  # --keep: the upgraded container serves on a port of 127.0.0.1 only
        (binding,) = kept.attrs["NetworkSettings"]["Ports"]["5432/tcp"]
        assert binding["HostIp"] == "127.0.0.1" and report["kept"]["connect"].endswith(
            f":{binding['HostPort']}/postgres"
        )
        assert kept.attrs["Config"]["Image"] == image_names["17-3.5"]
    finally:
        runtime.remove(kept.name)
        runtime.remove(f"{kept.name}-pgleap-old")
        runtime.remove_volume(report["kept"]["volume"])
        runtime.remove_volume(f"pgleap-old-binaries-{report['kept']['volume']}")
    suite, cases = _junit(junit)
    assert suite.get("failures") == "0" and int(suite.get("tests")) == len(cases) > 20
    names = {(c.get("classname"), c.get("name")) for c in cases}
    assert ("proof", f"{db.superuser}: identical after extension updates") in names
    assert ("proof", "analytics: identical after pg_upgrade") in names
    assert any(cls == "health" and "amcheck" in name for cls, name in names)
    assert any(cls == "extension" and "postgis 3.1.1 -> 3.5" in name for cls, name in names)
    assert _leftovers(runtime) == []


def test_a_dump_that_must_be_refused_is_no_go_and_leaves_nothing(runtime, image_names, tmp_path):
    """An aclitem column (its format changed in 16): no-go, the failing case named in JUnit."""
    sql = tmp_path / "acl.sql"
    sql.write_text("CREATE TABLE perms (id int PRIMARY KEY, acl aclitem);\n"
                   "INSERT INTO perms VALUES (1, 'postgres=r/postgres');\n")  # fmt: skip
    junit = tmp_path / "junit.xml"
    result = CliRunner().invoke(app, [
        "rehearse", "dump", str(sql), "--from", image_names["13-3.1"], "--to", image_names["17-3.5"],
        "--junit", str(junit),
    ])  # fmt: skip
    assert result.exit_code == 3, result.output[-3000:]
    _, cases = _junit(junit)
    failed = [c for c in cases if c.find("failure") is not None]
    assert failed and failed[-1].get("classname") == "verdict"
    assert "aclitem" in failed[-1].find("failure").text
    assert _leftovers(runtime) == []


def test_pgleap_image_rehearses_through_the_docker_socket_15_to_18(
    runtime, image_names, old_db_factory, tmp_path
):
    """pgleap's own image (built from the wheel) with the host's socket, as docs/ci.md runs it: 15 -> 18 go."""
    from toolkit.docker import pgleap_image

    built = pgleap_image.build()
    assert built.action in ("built", "reused"), built
    assert (
        runtime.docker.images.get(built.image).attrs["Config"]["User"] == "10001:10001"
    )  # non-root by default
    db = old_db_factory("15-3.3", rows=300)
    _dump(db, tmp_path)
    proc = subprocess.run(
        ["docker", "run", "--rm", "--user", "0", "-v", "/var/run/docker.sock:/var/run/docker.sock",
         "-v", "/tmp:/tmp", "-v", f"{tmp_path}:/work", built.image, "rehearse", "dump", "/work/main.dir", "--roles", "/work/roles.sql",
         "--from", image_names["15-3.3"], "--to", image_names["18-3.x"], "--junit", "/work/junit.xml", "-o", "json"],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-2000:]
    assert json.loads(proc.stdout)["verdict"] == "go"
    suite, cases = _junit(tmp_path / "junit.xml")
    assert suite.get("failures") == "0" and len(cases) > 20
    # PostGIS 3.3 -> 3.7 crosses the topology trap: the repair is a case of its own.
    assert any(c.get("classname") == "trap repair" for c in cases)
    assert _leftovers(runtime) == []
