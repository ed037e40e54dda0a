"""What `rehearse dump` makes of the files it is given (no Docker): each kind recognised,
anything else a usage error (exit 2) before a container starts."""

from __future__ import annotations

import gzip

import pytest

from toolkit.docker.rehearse_dump import _load_command, classify
from toolkit.errors import EXIT_USAGE, PgleapError


def test_each_kind_of_dump_is_recognised(tmp_path):
    (tmp_path / "a.dump").write_bytes(b"PGDMP\x01\x0e")
    (tmp_path / "b.sql.gz").write_bytes(gzip.compress(b"SELECT 1;"))
    (tmp_path / "c.sql").write_text("SELECT 1;")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "toc.dat").write_bytes(b"PGDMP")
    kinds = {p: classify(tmp_path / p).kind for p in ("a.dump", "b.sql.gz", "c.sql", "d")}
    assert kinds == {"a.dump": "custom", "b.sql.gz": "sql.gz", "c.sql": "sql", "d": "directory"}


@pytest.mark.parametrize("name", ["missing.sql", "emptydir"])
def test_what_is_not_a_dump_is_a_usage_error(tmp_path, name):
    (tmp_path / "emptydir").mkdir()
    with pytest.raises(PgleapError) as err:
        classify(tmp_path / name)
    assert err.value.exit_code == EXIT_USAGE and err.value.hint


def test_load_commands_quote_file_and_database_names(tmp_path):
    path = tmp_path / "it's.sql"
    path.write_text("SELECT 1;")
    cmd = _load_command(0, classify(path), "my db'; DROP")
    assert "'/tmp/pgleap-load/0-it'\\''s.sql'" in cmd and "-d 'my db'\\''; DROP'" in cmd
    archive = tmp_path / "x.dump"
    archive.write_bytes(b"PGDMP")
    assert _load_command(1, classify(archive), "ignored").startswith("pg_restore --create --exit-on-error")
