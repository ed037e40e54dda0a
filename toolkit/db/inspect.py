"""Facts only a running server can give: the OID-10 role, locales, extensions per database."""

from __future__ import annotations

from rich.markup import escape

from toolkit.core.facts import ClusterFacts, DatabaseFacts, ImageFacts
from toolkit.core.report import Report
from toolkit.db import traps, verify
from toolkit.db.sql import Server
from toolkit.errors import Refused

_PROVIDERS = {"c": "libc", "i": "icu", "b": "builtin"}


def cluster_facts(server: Server) -> ClusterFacts:
    ((superuser, version_num, version),) = server.query(
        "postgres",
        "SELECT (SELECT rolname FROM pg_authid WHERE oid = 10), "
        "current_setting('server_version_num')::int, current_setting('server_version')",
    )
    if version_num >= 170000:
        locale_cols = "datlocprovider::text, datlocale"
    elif version_num >= 150000:
        locale_cols = "datlocprovider::text, daticulocale"
    else:
        locale_cols = "'c', NULL::text"
    rows = server.query(
        "postgres",
        "SELECT datname, pg_encoding_to_char(encoding), datcollate, datctype, "
        f"{locale_cols}, datallowconn, datistemplate FROM pg_database ORDER BY datname",
    )
    databases = []
    for name, encoding, collate, ctype, provider, icu_locale, allow, is_template in rows:
        extensions = {}
        relations = 0
        if allow:
            extensions = dict(server.query(name, "SELECT extname, extversion FROM pg_extension ORDER BY 1"))
            ((relations,),) = server.query(
                name, "SELECT count(*) FROM pg_class WHERE relkind IN ('r', 'p', 'm', 'v', 'f', 'S')"
            )
        databases.append(
            DatabaseFacts(
                name=name,
                encoding=encoding,
                collate=collate,
                ctype=ctype,
                provider=_PROVIDERS.get(provider, provider),
                icu_locale=icu_locale,
                allow_connections=allow,
                is_template=is_template,
                extensions=extensions,
                relations=relations,
            )
        )
    ((max_connections,),) = server.query("postgres", "SELECT current_setting('max_connections')::int")
    return ClusterFacts(
        superuser=superuser,
        server_version=version,
        databases=tuple(databases),
        max_connections=max_connections,
    )


def inspect_sql(server: Server, new: ImageFacts, report: Report) -> ClusterFacts:
    """What the old cluster's catalogs tell before anything stops: its facts, indexes already
    invalid (reported, never blamed on the upgrade), and the columns known extension traps
    touch (refused when the target ships no repair)."""
    facts = cluster_facts(server)
    report.data["known_invalid_indexes"] = verify.invalid_indexes_everywhere(server)
    for name in report.data["known_invalid_indexes"]:
        report.say(f"  [yellow]already invalid[/] {escape(name)} (reported, not counted against the upgrade)")
    touched = traps.plan_findings(server, facts, new.extensions)
    report.data["traps"] = [
        {"trap": t.trap, "database": db, "column": f"{t.schema}.{t.table}.{t.column}", "type": t.type,
         "rows": t.rows, "repair": t.repair}
        for db, t in touched
    ]  # fmt: skip
    unrepairable = [f"{db}: {t.label()}" for db, t in touched if t.repair is None]
    if unrepairable:
        trap = next(
            tr for tr in traps.TRAPS if tr.name == next(t.trap for _, t in touched if t.repair is None)
        )
        raise Refused(
            f"{trap.why}; columns affected: {', '.join(unrepairable[:10])}",
            "choose a target image whose extension ships the repair (see docs/proof.md), "
            "or move that data out of the way before the upgrade",
        )
    return facts
