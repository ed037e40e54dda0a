"""Load Kubernetes credentials the way kubectl does, and fail the way kubectl says it.

The Python client's own messages name its in-cluster loader ("Service host/port is not
set") when a kubeconfig is missing or has no current context; a user expects kubectl's
words: which file, "not found", "current-context is not set". Order, as kubectl: the
--kubeconfig file, else every file in $KUBECONFIG, else ~/.kube/config; the in-cluster
service account only when no kubeconfig exists and the process runs in a Pod.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from kubernetes import config

from toolkit.errors import EnvironmentProblem

HOME_CONFIG = "~/.kube/config"
FIX = "pass --kubeconfig FILE and --context NAME, or set KUBECONFIG (as for kubectl)"


def _files(kubeconfig: str | None) -> tuple[list[Path], str]:
    """The kubeconfig files to read, and where their names came from (for the message)."""
    if kubeconfig:
        return [Path(kubeconfig).expanduser()], "--kubeconfig"
    env = os.environ.get("KUBECONFIG", "")
    if env.strip():
        return [Path(p).expanduser() for p in env.split(os.pathsep) if p], "KUBECONFIG"
    return [Path(HOME_CONFIG).expanduser()], "the default"


def _read(files: list[Path]) -> tuple[str | None, set[str]]:
    """The current-context (kubectl takes the first one set among the files) and every context name."""
    current, names = None, set()
    for f in files:
        try:
            doc = yaml.safe_load(f.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise EnvironmentProblem(f"cannot read kubeconfig file {f}: {exc}", FIX) from exc
        if not isinstance(doc, dict):
            continue
        current = current or (str(doc["current-context"]) if doc.get("current-context") else None)
        names |= {c["name"] for c in doc.get("contexts") or [] if isinstance(c, dict) and c.get("name")}
    return current, names


def load(kubeconfig: str | None = None, context: str | None = None) -> None:
    """Configure the kubernetes client, or raise EnvironmentProblem (exit 5) with kubectl's words."""
    files, source = _files(kubeconfig)
    present = [f for f in files if f.is_file()]
    if not present:
        in_pod = bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
        if source == "the default" and not context and in_pod:
            try:
                config.load_incluster_config()
                return
            except config.ConfigException as exc:
                raise EnvironmentProblem(f"in-cluster credentials: {exc}", FIX) from exc
        where = ", ".join(str(f) for f in files)
        raise EnvironmentProblem(
            f"kubeconfig file not found: {where} ({source})"
            + ("" if in_pod or source != "the default" else "; not running inside a cluster either"),
            FIX,
        )
    shown = ", ".join(str(f) for f in present)
    current, names = _read(present)
    if not context and current is None:
        raise EnvironmentProblem(
            f"no current context: current-context is not set in {shown}",
            "pass --context NAME, or run `kubectl config use-context NAME`",
        )
    if (context or current) not in names:
        raise EnvironmentProblem(
            f'context "{context or current}" does not exist in {shown}',
            "pick one of `kubectl config get-contexts`"
            + ("" if context else ", then `kubectl config use-context NAME`"),
        )
    try:
        config.load_kube_config(config_file=os.pathsep.join(str(f) for f in present), context=context)
    except (config.ConfigException, FileNotFoundError, ValueError, TypeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise EnvironmentProblem(f"cannot load kubeconfig {shown}: {first}", FIX) from exc
