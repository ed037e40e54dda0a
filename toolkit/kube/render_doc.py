"""What `pgleap render` prints around the objects: a header (order, what is temporary), the
per-object role, readable YAML (scripts as block text) and `-o json` as a `kind: List`.

Output is deterministic: the run id comes from the inputs (`run_id_for`), so the same
manifests and flags render the same bytes, and a Git diff of two renders shows only what changed.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import yaml

from toolkit.kube import objects
from toolkit.kube.plan import KubePlan


def run_id_for(*inputs: Any) -> str:
    """A run id that depends only on the inputs (12 hex digits, like a generated one)."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()[:12]


def role(plan: KubePlan, obj: dict[str, Any]) -> str:
    """One line: what this object is for, and whether it stays."""
    kind, name = obj.get("kind"), obj["metadata"]["name"]
    if kind == "ConfigMap" and name == objects.state_cm_name(plan.sts):
        return "pgleap's run state: written and updated by pgleap itself while it runs; do not commit it"
    if kind == "ConfigMap":
        return f"temporary: the scripts the Jobs run; deleted by `pgleap finalize sts {plan.sts}`"
    if kind == "VolumeSnapshot":
        return "kept after the upgrade (your way back): delete it once the upgrade is verified"
    if kind == "Job" and name == objects.job_name(plan.sts, "upgrade"):
        return f"temporary: runs once while {plan.sts} is scaled to 0; deleted by `pgleap finalize sts {plan.sts}`"
    if kind == "Job":
        return "temporary: re-seeds one standby after the primary is upgraded; deleted by finalize"
    if kind == "StatefulSet":
        return (
            f"commit this one: replaces StatefulSet {name} (the old one is deleted with --cascade=orphan, "
            "its PVCs kept)"
        )
    return "created by the upgrade"


def header(plan: KubePlan, objs: list[dict[str, Any]], *, with_state: bool, command: str = "render") -> str:
    """The comment block at the top of the YAML stream (`render`, or `plan sts` reading the live cluster)."""
    same = (
        "The same inputs render the same bytes (the run id comes from them; --run-id sets one)."
        if command == "render"
        else "The same live StatefulSet and flags give the same bytes (the run id comes from them)."
    )
    lines = [
        f"pgleap {command}: {plan.namespace}/{plan.sts} {plan.core.old_image} -> {plan.core.new_image} "
        f"(mode {plan.core.mode}, run id {plan.run_id})",
        same,
        f"Order of application, as `pgleap upgrade sts {plan.sts}` applies it:",
        f"  0. scale StatefulSet {plan.sts} to 0 and wait until its pod is gone (no object here)",
    ]
    width = max((len(f"{o['kind']} {o['metadata']['name']}") for o in objs), default=0)
    for n, o in enumerate(objs, 1):
        what = f"{o['kind']} {o['metadata']['name']}"
        lines.append(f"  {n}. {what.ljust(width)}  {role(plan, o)}")
    if not with_state:
        lines.append(
            f"Not included: pgleap's run-state ConfigMap {objects.state_cm_name(plan.sts)}, which pgleap "
            "writes and updates itself (--with-state shows it; never commit it)."
        )
    return "".join(f"# {line}\n" for line in lines)


class _Readable(yaml.SafeDumper):
    """Multi-line strings (the scripts) as `|` blocks, not one quoted line of `\\n`s.

    PyYAML counts a tab as special and quotes the whole script; YAML allows tabs inside a
    block scalar's content, so a multi-line string is judged as if its tabs were spaces."""

    def analyze_scalar(self, scalar: str) -> Any:
        if "\n" not in scalar or "\t" not in scalar:
            return super().analyze_scalar(scalar)
        analysis = super().analyze_scalar(scalar.replace("\t", " "))
        analysis.scalar = scalar
        return analysis


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Readable.add_representer(str, _str)


def to_yaml(
    objs: list[dict[str, Any]],
    plan: KubePlan | None = None,
    *,
    with_state: bool = True,
    command: str = "render",
) -> str:
    """A multi-document stream (`kubectl apply -f`); with a plan, the header and each object's role."""
    docs = []
    for o in objs:
        body = yaml.dump(o, Dumper=_Readable, sort_keys=False, default_flow_style=False, allow_unicode=True)
        docs.append((f"# {role(plan, o)}\n" if plan else "") + body)
    text = "---\n".join(docs)
    return (header(plan, objs, with_state=with_state, command=command) if plan else "") + text


def as_list(objs: list[dict[str, Any]]) -> dict[str, Any]:
    """`-o json`: one document, as `kubectl get -o json` prints several objects."""
    return {"apiVersion": "v1", "kind": "List", "metadata": {}, "items": objs}
