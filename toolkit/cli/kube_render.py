"""`pgleap render`: offline, the objects an upgrade would create, from manifests."""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Annotated, Any

import typer
import yaml
from rich.markup import escape

from toolkit.cli import options as cli_options
from toolkit.cli.kube_deps import env_for, scripts
from toolkit.cli.kube_options import (
    InitdbOpt,
    KeepReadersOpt,
    ModeOpt,
    NamespaceOpt,
    SetEnvOpt,
    SnapshotOpt,
    SuperuserOpt,
    ToOpt,
    check_render_output,
    check_sts_name,
    read_manifests,
    trusted_major,
)
from toolkit.cli.kube_output import err, replica_lines
from toolkit.errors import PgleapError, Refused
from toolkit.kube import guard, objects, render, render_doc
from toolkit.kube import shape as kube_shape
from toolkit.kube.facts import find_postgres_container, gather
from toolkit.kube.image_ref import parse_image
from toolkit.kube.plan import make_plan
from toolkit.kube.topology import detect, read_sts_names


def _major(flag: str, of: str) -> Any:
    """--from-major/--to-major: a PostgreSQL major `render` trusts when an image tag names none."""
    return typer.Option(
        flag, metavar="MAJOR", min=9, max=99, help=f"PostgreSQL major {of}, if its tag says none."
    )


def render_cmd(
    to: ToOpt,
    file: Annotated[
        str, typer.Option("--file", "-f", metavar="FILE", help="Manifests with the StatefulSet ('-': stdin).")
    ],
    sts_name: Annotated[
        str | None,
        typer.Option("--sts", metavar="NAME", help="Which StatefulSet, if several.", callback=check_sts_name),
    ] = None,
    namespace: NamespaceOpt = None,
    output: Annotated[
        str,
        typer.Option("--output", "-o", metavar="FORMAT", help="yaml or json", callback=check_render_output),
    ] = "yaml",
    snapshot: SnapshotOpt = False,
    mode: ModeOpt = "link",
    downtime: cli_options.Downtime = "verified",
    superuser: SuperuserOpt = None,
    initdb_args: InitdbOpt = "",
    set_env: SetEnvOpt = None,
    keep_readers: KeepReadersOpt = False,
    from_major: Annotated[int | None, _major("--from-major", "of the running image")] = None,
    to_major: Annotated[int | None, _major("--to-major", "of --to")] = None,
    run_id: Annotated[
        str | None,
        typer.Option(
            "--run-id",
            metavar="ID",
            help="The run id in names and annotations (default: derived from the inputs, so the same "
            "inputs render the same bytes).",
            callback=_check_run_id,
        ),
    ] = None,
    with_state: Annotated[
        bool,
        typer.Option(
            "--with-state",
            help="Also print pgleap's run-state ConfigMap (pgleap writes it itself; never commit it).",
        ),
    ] = False,
) -> None:
    """Offline: objects an upgrade would create (-f FILE, or `helm template … | pgleap render -f -`).

    Offline, nothing can probe the images: the majors come from the tags, or from
    --from-major/--to-major (trusted, and said so). `pgleap plan sts` probes them."""
    cli_options.only_verified_downtime(
        downtime, "render (offline; `pgleap plan sts --downtime minimal` shows its objects)"
    )
    text = read_manifests(file)
    docs = _documents(file, text)
    sts = _pick_statefulset(docs, file, sts_name)
    sts["metadata"]["namespace"] = namespace or sts["metadata"].get("namespace") or "default"
    services = [d for d in docs if d.get("kind") == "Service"]
    kube_shape.check_statefulset(sts)  # hostile input: types first
    running = find_postgres_container(sts).get("image")
    old_major = trusted_major(running if isinstance(running, str) else "", from_major, "--from-major")
    facts = gather(sts, services=services, major=old_major)
    read = next((d for n in read_sts_names(facts.name) for d in docs
                 if d.get("kind") == "StatefulSet" and d["metadata"]["name"] == n), None)  # fmt: skip
    read_facts = None
    if read is not None:
        read.setdefault("metadata", {})["namespace"] = sts["metadata"]["namespace"]
        read_facts = gather(read, services=services, major=old_major)
    topology = detect(sts, facts, read_sts=read, read_facts=read_facts, services=services)
    target = parse_image(to)
    target = dataclasses.replace(target, major=trusted_major(to, to_major, "--to-major"))
    _refuse_or_warn(guard.problems(facts, target, live=False, topology=topology), facts.name)
    run_id = run_id or render_doc.run_id_for(
        text, to, namespace, sts_name, snapshot, mode, superuser, initdb_args, set_env, keep_readers,
        from_major, to_major,
    )  # fmt: skip
    try:
        plan = make_plan(
            facts,
            to,
            mode=mode,
            snapshot=snapshot,
            job_env=env_for(facts, superuser, initdb_args, set_env),
            topology=topology,
            read_facts=read_facts,
            keep_readers=keep_readers,
            target=target,
            run_id=run_id,
        )
    except ValueError as exc:
        raise PgleapError(str(exc), "see --set-env") from exc
    objs = render.objects_for(plan, sts, scripts(required=False), read if plan.read_sts else None)
    if not with_state:
        objs = [o for o in objs if o["metadata"]["name"] != objects.state_cm_name(plan.sts)]
    for line in replica_lines(plan):
        err.print(line, markup=False, highlight=False)
    if output == "json":
        print(json.dumps(render_doc.as_list(objs), indent=2))
    else:
        print(render_doc.to_yaml(objs, plan, with_state=with_state), end="")


def _documents(file: str, text: str) -> list[dict]:
    """The YAML documents that are mappings, a List's items among them (kubectl get -o yaml)."""
    try:
        docs = [d for d in yaml.safe_load_all(text) if isinstance(d, dict)]
    except yaml.YAMLError as exc:
        raise Refused(
            f"{file} is not valid YAML: {exc}", "pass the output of `helm template` or kubectl"
        ) from exc
    for d in list(docs):
        if d.get("kind") == "List" and isinstance(d.get("items"), list):
            docs += [i for i in d["items"] if isinstance(i, dict)]
    for d in docs:
        if d.get("kind") in ("StatefulSet", "Service"):
            meta = d.get("metadata")
            if not isinstance(meta, dict) or not isinstance(meta.get("name"), str):
                raise Refused(
                    f"{file}: a {d['kind']} has no metadata.name",
                    "pass complete manifests (the output of `helm template` or `kubectl get -o yaml`)",
                )
    return docs


def _pick_statefulset(docs: list[dict], file: str, sts_name: str | None) -> dict:
    """The one StatefulSet to upgrade: --sts NAME, or the only one, or the primary of a primary and its
    read StatefulSet."""
    candidates = [d for d in docs if d.get("kind") == "StatefulSet"]
    names = {d["metadata"]["name"] for d in candidates}
    if not sts_name and len(candidates) == 2:  # a primary and its read StatefulSet: the primary
        primaries = [d for d in candidates if names & set(read_sts_names(d["metadata"]["name"]))]
        candidates = primaries or candidates
    if sts_name:
        candidates = [d for d in candidates if d["metadata"]["name"] == sts_name]
    if len(candidates) != 1:
        found = ", ".join(d["metadata"]["name"] for d in docs if d.get("kind") == "StatefulSet") or "none"
        raise Refused(
            f"{file}: expected one StatefulSet{f' named {sts_name}' if sts_name else ''}, found: {found}",
            "pick one with --sts NAME",
        )
    return candidates[0]


def _refuse_or_warn(found: list, sts_name: str) -> None:
    """Rendering changes nothing: an owner (GitOps, Helm, Terraform) is a warning, the rest refuses."""
    for p in found:
        if p.owner:
            err.print(f"[yellow]warning:[/] {escape(p.message)} ({escape(_advice(p.hint, sts_name))})")
    hard = [p for p in found if not p.owner]
    if hard:
        raise Refused("; ".join(p.message for p in hard), " | ".join(p.hint for p in hard))


def _check_run_id(value: str | None) -> str | None:
    if value is not None and not re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?", value):
        raise typer.BadParameter(
            f"{value!r} is not a run id (lower-case letters, digits and '-', at most 32)",
            param_hint="--run-id",
        )
    return value


def _advice(hint: str, sts: str) -> str:
    """Render takes no --allow-* flag (it changes nothing): name it as the live upgrade's flag."""
    advice, sep, rerun = hint.rpartition("; rerun with ")
    if not sep:
        return hint
    flag, _, rest = rerun.partition(" ")
    return f"{advice}; the live run: `{cli_options.prog()} upgrade sts {sts} {flag}`" + (
        f" {rest}" if rest else ""
    )
