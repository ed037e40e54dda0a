"""Facts only a running server can give: the OID-10 role, locales, extensions per database."""

from __future__ import annotations

from toolkit.core.facts import ClusterFacts, DatabaseFacts
from toolkit.db.sql import Server

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
