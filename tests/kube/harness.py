"""A fake cluster seeded from a fixture, with a Kube and a runtime on top and a fake clock."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tests.kube.conftest import load_docs
from tests.kube.fake_api import FakeKubernetesApi, reconcile_for_test
from toolkit.kube.api import Kube
from toolkit.kube.model import HookContext, Timeouts
from toolkit.kube.runtime import KubeRuntime

SCRIPTS = {
    "collect.sh": "#!/bin/bash\nset -euo pipefail\n",
    "upgrade.sh": "#!/bin/bash\n",
    "lib.sh": "# lib\n",
}
JOB_ENV = {"PGLEAP_SUPERUSER": "postgres", "PGLEAP_INITDB_ARGS": "--data-checksums"}


@dataclass
class Clock:
    now: float = 0.0

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Cluster:
    fake: FakeKubernetesApi
    kube: Kube
    runtime: KubeRuntime
    namespace: str
    name: str
    clock: Clock
    lines: list[str] = field(default_factory=list)
    hook_calls: list[HookContext] = field(default_factory=list)

    def hook(self, ctx: HookContext) -> None:
        self.hook_calls.append(ctx)

    def sts(self) -> dict[str, Any] | None:
        return self.fake.get_for_test("StatefulSet", self.namespace, self.name)

    def image(self) -> str:
        sts = self.sts()
        assert sts is not None
        return sts["spec"]["template"]["spec"]["containers"][0]["image"]


def make_cluster(fixture: str) -> Cluster:
    """Seed the fixture's objects, then let the fake controller create what a live cluster has."""
    fake = FakeKubernetesApi()
    docs = load_docs(fixture)
    fake.seed_for_test(*docs)
    all_sts = [d for d in docs if d["kind"] == "StatefulSet"]
    sts = all_sts[0]
    ns, name = sts["metadata"]["namespace"], sts["metadata"]["name"]
    pods = [d for d in docs if d["kind"] == "Pod"]
    if pods:
        fake.node = pods[0]["spec"]["nodeName"]
        fake.nodes = {p["metadata"]["name"]: p["spec"]["nodeName"] for p in pods}
    for s in all_sts:
        reconcile_for_test(fake, s["metadata"]["namespace"], s["metadata"]["name"])
    clock = Clock()
    kube = Kube(
        core=fake, apps=fake, batch=fake, policy=fake, custom=fake, sleep=clock.sleep, clock=lambda: clock.now
    )
    cluster = Cluster(fake, kube, None, ns, name, clock)  # type: ignore[arg-type]
    cluster.runtime = KubeRuntime(kube, log=cluster.lines.append, timeouts=Timeouts(poll=1.0))
    return cluster
