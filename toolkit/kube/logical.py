"""The Kubernetes side of `--strategy logical` (engine/logical.py's `LogicalSide`).

The old StatefulSet NAME keeps serving while NAME-next is built and synchronised; the engine
reaches both servers through port-forwards (the hooks' kube/portforward.py) and does every
publication, subscription and the switch in SQL. The hand-over points the user's Services
that selected the old pods at the new ones; rollback points them back; finalize deletes the
old StatefulSet and its PVCs (the CLI asks first, as in-place finalize does).

The run's state is a ConfigMap (pgleap-NAME-logical, key state.json) with the same fields
as Docker's state file: the engine reads and writes it through `KubeState`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from typing import Any

from toolkit.db import logical_switch as switch
from toolkit.db.sql import Server
from toolkit.errors import PgleapError, Refused
from toolkit.kube import logical_objects as lo
from toolkit.kube import probe as kube_probe
from toolkit.kube.api import Kube
from toolkit.kube.image_ref import parse_image
from toolkit.kube.logical_reads import LogicalReads, read_refusals
from toolkit.kube.logical_standbys import read_topology, standby_refusals
from toolkit.kube.model import job_result
from toolkit.kube.objects import replica_job_name, state_cm_name
from toolkit.kube.pod_login import pod_login
from toolkit.kube.portforward import local_port
from toolkit.resources import container_dir

logger = logging.getLogger(__name__)

CLIENTS = "FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"


def schema_script() -> str:
    return (container_dir() / lo.SCRIPT_KEY).read_text()


class KubeState:
    """The engine's run state (phase + data, save, clear) in the run's ConfigMap."""

    def __init__(self, kube: Kube, namespace: str, sts: str) -> None:
        self.kube, self.namespace, self.sts = kube, namespace, sts
        self.name = lo.config_map_name(sts)
        cm = kube.get("ConfigMap", namespace, self.name)
        text = ((cm or {}).get("data") or {}).get(lo.STATE_KEY)
        try:
            self.data: dict = json.loads(text) if text else {}
        except ValueError as exc:
            raise PgleapError(
                f"the state of the logical upgrade in ConfigMap {namespace}/{self.name} is damaged ({exc})",
                "the data itself is safe; `kubectl get sts,svc` shows which cluster the Services select",
            ) from exc
        self.exists = cm is not None
        self.annotations: dict[str, str] = {}  # the run's holder (kube/lease.py), set on the create

    @property
    def phase(self) -> str | None:
        return self.data.get("phase")

    def save(self, **changes: Any) -> None:
        self.data.update(changes)
        text = json.dumps(self.data, indent=2, default=str)
        if self.exists:
            self.kube.patch("ConfigMap", self.namespace, self.name, {"data": {lo.STATE_KEY: text}})
        else:
            cm = lo.config_map(self.sts, self.namespace, text, schema_script())
            if self.annotations:
                cm["metadata"]["annotations"] = dict(self.annotations)
            self.kube.create(cm)  # atomic: of two runs starting at once, one gets Conflict
            self.exists = True

    def clear(self) -> None:
        self.kube.delete("ConfigMap", self.namespace, self.name)
        self.exists, self.data = False, {}


class LogicalKube(LogicalReads):
    """One user StatefulSet (its primary, ordinal 0, and any standbys at ordinals 1..N-1) and its
    blue/green copy NAME-next (the standby hooks: kube/logical_standbys.py, a read StatefulSet: kube/logical_reads.py)."""

    def __init__(
        self,
        kube: Kube,
        namespace: str,
        name: str,
        *,
        container: str,
        state: KubeState,
        log: Callable[[str], None] = logger.info,
        timeout: float = 600.0,
        prog: str = "pgleap",
        scripts: Mapping[str, str] | None = None,
    ) -> None:
        self.kube, self.namespace, self.name = kube, namespace, name
        self.prog = prog  # "kubectl pgleap" when run as the kubectl plugin
        self.scripts = scripts  # the container scripts: probe.sh for an image whose tag names no major
        self.container, self.state, self.log = container, state, log
        self.timeout = timeout
        self.next_name = lo.next_name(name)
        self.old_pod, self.next_pod = f"{name}-0", f"{self.next_name}-0"
        self.blue_name = self.old_pod  # the old cluster after the switch: the same pod, still running
        # after the hand-over NAME (the serving cluster) is the new one, until a hand-back
        self.serving_next = state.phase == "switched"
        self._forwards = ExitStack()
        self._ports: dict[str, tuple[str, int]] = {}
        self._credentials: tuple[str, str | None] | None = None

    def close(self) -> None:
        self._forwards.close()
        self._ports.clear()

    # ---- objects -------------------------------------------------------------------------------

    def statefulset(self) -> dict[str, Any]:
        sts = self.kube.get("StatefulSet", self.namespace, self.name)
        if sts is None:
            raise PgleapError(f"StatefulSet {self.namespace}/{self.name} not found")
        return sts

    def old_image(self) -> str:
        pod = self.statefulset()["spec"]["template"]["spec"]
        return next(c["image"] for c in pod["containers"] if c["name"] == self.container)

    def services(self) -> dict[str, dict]:
        """The Services that select the old pods now (read at preflight, recorded in the state)."""
        labels = self.statefulset()["spec"]["template"]["metadata"].get("labels") or {}
        return lo.selecting_services(self.kube.list("Service", self.namespace), labels)

    def refusals(self) -> list[tuple[str, str]]:
        """What the Kubernetes side refuses before anything changes."""
        sts = self.statefulset()
        topo, source = read_topology(self.kube, self.namespace, sts), self.describe()
        out = standby_refusals(topo, sts, source["services"], source.get("standby_services") or {})
        out += read_refusals(topo, sts, source, self.container)
        start = (self.statefulset()["spec"].get("ordinals") or {}).get("start", 0)
        if start:
            out.append((f"StatefulSet {self.name} numbers its pods from {start} (spec.ordinals); --strategy "
                        "logical on Kubernetes expects the primary at ordinal 0", "use --strategy inplace"))  # fmt: skip
        if self.kube.get("ConfigMap", self.namespace, state_cm_name(self.name)):
            out.append((f"an in-place pgleap run is recorded for {self.name}",
                        f"finish it (`{self.command('finalize')}`) or roll it back first"))  # fmt: skip
        return out

    def command(self, verb: str) -> str:
        return f"{self.prog} {verb} sts {self.name} -n {self.namespace}"

    def describe(self) -> dict:
        recorded = self.state.data.get("logical_source") or {}
        if recorded.get("services") is not None:  # a rebuilt run keeps the selectors of the first
            return recorded
        sts = self.statefulset()
        replicas = sts["spec"].get("replicas", 1)
        return {"statefulset": self.name, "namespace": self.namespace, "next": self.next_name,
                "container": self.container, "image": self.old_image(), "services": self.services(),
                "old_claims": self._claims(self.name, sts, replicas),
                "next_claims": self._claims(self.next_name, sts, replicas),
                **self.standby_source(sts)}  # fmt: skip

    @staticmethod
    def _claims(sts_name: str, sts: dict[str, Any], replicas: int) -> list[str]:
        templates = [t["metadata"]["name"] for t in sts["spec"].get("volumeClaimTemplates") or []]
        return [f"{t}-{sts_name}-{i}" for t in templates for i in range(replicas)]

    def _recorded_services(self) -> dict[str, dict]:
        return (self.state.data.get("logical_source") or {}).get("services") or {}

    # ---- pods and servers ------------------------------------------------------------------------

    def _pod_of(self, name: str) -> str:
        if name == self.name:
            return self.next_pod if self.serving_next else self.old_pod
        if name in (self.next_name, self.next_pod):
            return self.next_pod
        if name == self.old_pod:
            return self.old_pod
        raise PgleapError(f"no pod for {name!r}")

    def _pod(self, pod: str) -> dict[str, Any] | None:
        return self.kube.get("Pod", self.namespace, pod)

    @staticmethod
    def _ready(pod: dict[str, Any] | None) -> bool:
        if not pod or pod.get("metadata", {}).get("deletionTimestamp"):
            return False
        conditions = (pod.get("status") or {}).get("conditions") or []
        return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)

    def ip(self, name: str) -> str:
        """The pod's address, where the other server and the schema Job reach it (in the cluster)."""
        pod = self._pod_of(name)
        address = ((self._pod(pod) or {}).get("status") or {}).get("podIP")
        if not address:
            raise PgleapError(f"pod {self.namespace}/{pod} has no address", "is it running?")
        return address

    def credentials(self) -> tuple[str, str | None]:
        """(superuser, password) as the pod sees them (env or *_FILE, the user's Secret): kept in memory."""
        if self._credentials is None:
            pod = self.old_pod if self._pod(self.old_pod) else self.next_pod
            self._credentials = pod_login(self.kube, self.namespace, pod, self.container)
        return self._credentials

    @property
    def superuser(self) -> str:
        return self.credentials()[0]

    def server(self, name: str, label: str) -> Server:
        """The pod's PostgreSQL through a port-forward (one per pod, reused), as the superuser."""
        pod = self._pod_of(name)
        user, password = self.credentials()  # first: a failed exec leaves no forward half-open
        if pod not in self._ports:
            self._ports[pod] = self._forwards.enter_context(
                local_port(lambda: self.kube.port_forward(self.namespace, pod, 5432))
            )
        host, port = self._ports[pod]
        server = Server(host, port, user, password, label=f"{label} (pod {pod})")
        server.wait_ready(timeout=120)
        return server

    def target_major(self, image: str) -> int:
        """The tag's major, or (a digest, a tag without a version) what the image says in a probe Pod."""
        major = parse_image(image).major
        if major is not None:
            return major
        if self.scripts is None or not kube_probe.can_probe(self.scripts):
            raise Refused(f"cannot tell the PostgreSQL major of {image} from its tag",
                          "give a tag that starts with the major, e.g. postgis/postgis:17-3.5")  # fmt: skip
        return kube_probe.probe_image(self.kube, self.statefulset(), image, self.scripts, log=self.log).major

    def _wait_ready(self, pod: str, *, not_uid: str | None = None) -> None:
        def ready() -> bool | None:
            obj = self._pod(pod)
            if self._ready(obj) and (obj or {}).get("metadata", {}).get("uid") != not_uid:
                return True
            return None

        self.kube.wait(f"pod {self.namespace}/{pod} ready", ready, timeout=self.timeout)

    def _restart(self, pod: str) -> None:
        uid = ((self._pod(pod) or {}).get("metadata") or {}).get("uid")
        self._ports.pop(pod, None)  # a new pod: the next connection opens a new forward
        self.kube.delete("Pod", self.namespace, pod)
        self._wait_ready(pod, not_uid=uid)

    def restart_old(self) -> None:
        """wal_level: the StatefulSet controller starts the deleted primary pod again."""
        self.log(f"restarting pod {self.old_pod} for wal_level = logical")
        self._restart(self.old_pod)

    def restart_next(self) -> None:
        self._restart(self.next_pod)

    def next_running(self) -> bool:
        return self._ready(self._pod(self.next_pod))

    # ---- the new cluster -------------------------------------------------------------------------

    def start_next(self, image: str) -> Server:
        if self.kube.get("StatefulSet", self.namespace, self.next_name) is None:
            sts = lo.next_statefulset(self.statefulset(), container=self.container, old_image=self.old_image(),
                                      new_image=image, new_major=self.target_major(image))  # fmt: skip
            self.kube.create(sts)
            self.log(f"created StatefulSet {self.next_name} on {image}")
        self._wait_ready(self.next_pod)
        return self.server(self.next_name, "new server")

    def copy_schema(self, image: str, old_host: str, new_host: str, databases: list[str]) -> None:
        """The schema Job (new image's pg_dump), to its end; its log's tail on failure."""
        job_name = lo.schema_job_name(self.name)
        self.kube.patch(
            "ConfigMap", self.namespace, self.state.name, {"data": {lo.SCRIPT_KEY: schema_script()}}
        )
        self.kube.delete("Job", self.namespace, job_name, propagation="Background")
        self.kube.wait(f"Job {job_name} gone", lambda: True if self.kube.get("Job", self.namespace, job_name)
                       is None else None, timeout=120)  # fmt: skip
        job = lo.schema_job(self.statefulset(), container=self.container, image=image, superuser=self.superuser,
                            old_host=old_host, new_host=new_host, databases=databases)  # fmt: skip
        self.kube.create(job)

        result = self.kube.wait(
            f"Job {job_name}",
            lambda: job_result(self.kube.get("Job", self.namespace, job_name) or {}),
            timeout=self.timeout,
        )
        if result != "Complete":
            pods = self.kube.list("Pod", self.namespace, label_selector=f"job-name={job_name}")
            tail = ""
            if pods:
                lines = list(
                    self.kube.logs(self.namespace, pods[-1]["metadata"]["name"], "schema", follow=False)
                )
                tail = "\n".join("".join(lines).strip().splitlines()[-15:])
            raise PgleapError(
                "copying the schema to the new server failed (the old server keeps serving)",
                f"its log ends with:\n{tail}\nfix the cause, then `{self.command('rollback')}` and try again",
            )
        self.kube.delete("Job", self.namespace, job_name, propagation="Background")

    # ---- the hand-over ---------------------------------------------------------------------------

    def _point(self, wanted_of: Callable[[str, dict], dict]) -> None:
        for svc, original in self._recorded_services().items():
            live = self.kube.get("Service", self.namespace, svc)
            if live is None:
                self.log(f"Service {svc} no longer exists: left alone")
                continue
            current = (live.get("spec") or {}).get("selector") or {}
            wanted = wanted_of(svc, original)
            if current != wanted:
                self.kube.patch("Service", self.namespace, svc, lo.selector_patch(current, wanted))
                self.log(f"Service {svc} now selects {wanted}")

    def _end_clients(self, pod: str) -> int:
        """Client sessions still on `pod` (they came through a Service before it moved) are ended:
        they reconnect through the Service, to the serving cluster."""
        server = self.server(pod, "old server" if pod == self.old_pod else "new server")
        with server.connect() as conn:
            pids = [r[0] for r in conn.execute(f"SELECT pid {CLIENTS}").fetchall()]
            for pid in pids:
                conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        return len(pids)

    def prepare_hand_over(self, image: str) -> None:
        """Nothing to make ahead: NAME-next serves already; the hand-over only moves Service selectors."""

    def after_hand_over(self) -> None:
        """Nothing left for after the pause: the Services moved in it."""

    def hand_over(self, image: str) -> None:
        """Inside the write pause: every recorded Service selects the new pods; the old server's
        remaining client sessions end (it stays read-only until start_blue)."""
        labels = lo.next_labels(self.name)
        self._point(lambda _svc, _original: labels)
        self.serving_next = True
        self._end_clients(self.old_pod)

    def start_blue(self) -> Server:
        """The old cluster for the reverse subscription: the same pod, which never stopped; clients
        that still reached it through a Service not yet updated everywhere are ended, then it is
        writable again (the subscription applies the new cluster's writes)."""
        self._end_clients(self.old_pod)
        server = self.server(self.old_pod, "old server")
        switch.resume_writes(server)
        return server

    def hand_back(self) -> None:
        """Rollback: each recorded Service gets its original selector back."""
        self._point(lambda _svc, original: original)
        self.point_standby_services("old")
        self.serving_next = False
        if self._pod(self.next_pod):
            self._end_clients(self.next_pod)

    # ---- removal ---------------------------------------------------------------------------------

    def _remove(self, sts_name: str, claims: list[str], replicas: int) -> None:
        if self.kube.get("StatefulSet", self.namespace, sts_name) is not None:
            self.kube.delete("StatefulSet", self.namespace, sts_name, propagation="Foreground")
        pods = [f"{sts_name}-{i}" for i in range(replicas)]
        for pod in pods:
            self._ports.pop(pod, None)
        self.kube.wait(f"pods of {sts_name} gone", lambda: True if not any(self._pod(p) for p in pods) else None,
                       timeout=self.timeout)  # fmt: skip
        for claim in claims:
            self.kube.delete("PersistentVolumeClaim", self.namespace, claim)

    def remove_next(self) -> None:
        """The new StatefulSet and its PVCs (rollback, or a rebuilt copy); never the user's."""
        source = self.describe()
        self._remove(self.next_name, source["next_claims"], source.get("replicas", 1))
        for i in range(1, source.get("replicas", 1)):  # a reseed Job a failed re-seed left
            self.kube.delete("Job", self.namespace, replica_job_name(f"{self.next_name}-{i}", "reseed"),
                             propagation="Background")  # fmt: skip
        self.remove_read_next()

    def remove_old(self) -> None:
        """Finalize: the user's StatefulSet and its PVCs, only once every recorded Service selects
        the new pods (a Service still on the old pods would lose its backend)."""
        labels = lo.next_labels(self.name)
        for svc in self._recorded_services():
            live = self.kube.get("Service", self.namespace, svc)
            if live is not None and (live.get("spec") or {}).get("selector") != labels:
                raise Refused(
                    f"Service {svc} does not select the new pods; finalize would leave it without a backend",
                    f"`{self.command('resume')}` completes the switch, or `{self.command('rollback')}`",
                )
        if waiting := self.standby_services_moved():
            raise Refused(f"Service(s) {', '.join(waiting)} still select old standbys; finalize would leave "
                          "them without a backend", f"`{self.command('resume')}` re-seeds the standbys first")  # fmt: skip
        self.remove_read_old()  # first: its pods follow NAME-0
        source = self.describe()
        self._remove(self.name, source["old_claims"], source.get("replicas", 1))  # the standbys with it
