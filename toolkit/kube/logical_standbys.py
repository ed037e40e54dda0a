"""The standbys of `--strategy logical` on Kubernetes (the engine's standby hooks of `LogicalSide`).

Topology "ordinals" (ordinals 1..N-1 of the user's StatefulSet stream from ordinal 0): the old
StatefulSet NAME keeps running, standbys included, until finalize, so rollback finds them as they
were. NAME-next is built with one replica; after the switch (when the user's headless Service
selects NAME-next's pods, so `NAME-next-0.<serviceName>` resolves) each standby ordinal i gets its
claim `<data>-NAME-next-i` created and seeded by the reseed Job (toolkit/container/reseed.sh, the
same Job template as in-place), then NAME-next is scaled to i+1 and pgleap waits until the new
standby streams from NAME-next-0. Rollback deletes NAME-next with every claim; finalize deletes
NAME with every claim. A separate read StatefulSet R (primary-read) gets its own R-next:
toolkit/kube/logical_reads.py, which reuses `reseed_into` and the reseed Job here.
"""

from __future__ import annotations

import posixpath
import time
from dataclasses import dataclass
from typing import Any

from toolkit.core.paths import VOLUME as VOLUME_MOUNT
from toolkit.errors import PgleapError
from toolkit.kube import logical_objects as lo
from toolkit.kube import render
from toolkit.kube.hooks import STREAMING_SLOTS
from toolkit.kube.model import job_result
from toolkit.kube.objects import LABEL_ACTION, replica_job_name
from toolkit.kube.reading import Reader
from toolkit.kube.topology import Standby, Topology
from toolkit.resources import container_dir

# the scripts the reseed Job runs, put into the run's ConfigMap next to logical-schema.sh
RESEED_SCRIPTS = ("lib.sh", "reseed.sh", "upgrade.sh")
LAG = (
    "SELECT coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), r.replay_lsn), 0)::bigint FROM pg_stat_replication r "
    "JOIN pg_replication_slots s ON s.active_pid = r.pid WHERE s.slot_name = %s"
)


@dataclass(frozen=True)
class JobCore:
    """The part of a plan's core (`MajorUpgrade`) the replica-job template reads."""

    new_image: str
    uid: int
    gid: int | None


@dataclass(frozen=True)
class JobView:
    """What the replica-job template and render.job_pod_parts read of a plan, for NAME-next."""

    namespace: str
    container: str
    core: JobCore
    fs_group: int | None


def read_topology(kube: Any, namespace: str, sts: dict[str, Any]) -> Topology:
    reader = Reader(kube)
    facts = reader.inspect(namespace, sts["metadata"]["name"], sts)
    return reader.topology(namespace, sts["metadata"]["name"], sts, facts)[0]


POD_NAME, POD_INDEX = "statefulset.kubernetes.io/pod-name", "apps.kubernetes.io/pod-index"


def standby_services(
    services: list[dict[str, Any]], sts: dict[str, Any], pod_labels: dict[str, str], first: int = 1
) -> dict:
    """name -> {"old": selector, "new": selector, "ordinal": i} of every Service that selects one
    standby pod (NAME-i, i >= first: 1 for NAME, 0 for a read StatefulSet) by its pod-name or
    pod-index label: after NAME-next-i streams it selects that pod instead (rollback: back)."""
    name, nxt = sts["metadata"]["name"], lo.next_name(sts["metadata"]["name"])
    out = {}
    for svc in services:
        selector = (svc.get("spec") or {}).get("selector") or {}
        rest = {k: v for k, v in selector.items() if k not in (POD_NAME, POD_INDEX)}
        if not selector or rest.items() - pod_labels.items() or (POD_NAME not in selector and not rest):
            continue  # (a pod index alone selects that ordinal of every StatefulSet: not this one's)
        if POD_NAME in selector and selector[POD_NAME].startswith(f"{name}-"):
            ordinal = selector[POD_NAME][len(name) + 1 :]
        else:
            ordinal = selector.get(POD_INDEX, "")
        if (
            not ordinal.isdigit()
            or int(ordinal) < first
            or (POD_INDEX in selector and selector[POD_INDEX] != ordinal)
        ):
            continue
        wanted = {**lo.next_labels(name), **({POD_NAME: f"{nxt}-{ordinal}"} if POD_NAME in selector else {}),
                  **({POD_INDEX: ordinal} if POD_INDEX in selector else {})}  # fmt: skip
        out[svc["metadata"]["name"]] = {"old": dict(selector), "new": wanted, "ordinal": int(ordinal)}
    return out


def standby_refusals(topo: Topology, sts: dict[str, Any], services: dict[str, dict], per_pod: dict) -> list:
    """(message, hint) for standbys the logical path cannot carry; none for plain ordinals."""
    name = sts["metadata"]["name"]
    if topo.kind == "single":
        return []
    if topo.kind == "primary-read":  # a separate read StatefulSet: toolkit/kube/logical_reads.py
        return []
    if topo.problem:
        return [(topo.problem, topo.hint)]
    out = []
    svc = sts["spec"].get("serviceName")
    if svc not in services:
        out.append((f"StatefulSet {name}'s standbys reach the primary through Service {svc or '(none)'}, which "
                    "does not select the primary's pods by their template labels; the new standbys could not "
                    f"reach {lo.next_name(name)}-0 by name",
                    "give the StatefulSet a headless Service that selects its pods (spec.serviceName), or use "
                    "--strategy inplace"))  # fmt: skip
    if others := sorted(set(topo.read_services) - set(services) - set(per_pod)):
        out.append((f"Service(s) {', '.join(others)} select standby pods of {name} by labels pgleap cannot "
                    "map to NAME-next's pods; --strategy logical moves Services that select the pods by the "
                    "template's labels, or one standby by its pod-name or pod-index label",
                    "select the pods that way, or use --strategy inplace"))  # fmt: skip
    return out


def plan_lines(source: dict[str, Any]) -> list[str]:
    """What happens to the standbys, for `plan sts --strategy logical`."""
    replicas = source.get("replicas", 1)
    if replicas <= 1:
        return []
    nxt, name = source["next"], source["statefulset"]
    lines = [f"standbys {name}-1..{replicas - 1}: keep following {name}-0 until finalize; after the switch each "
             f"{nxt}-i gets its claim seeded by Job pgleap-{nxt}-i-reseed (pg_basebackup from {nxt}-0), then "
             f"{nxt} is scaled up to {replicas} and each standby streams before the next one"]  # fmt: skip
    for svc, entry in (source.get("standby_services") or {}).items():
        lines.append(
            f"Service {svc}: selects {nxt}-{entry['ordinal']} once it streams (restored by rollback)"
        )
    return lines


class LogicalStandbys:
    """The standby hooks, mixed into LogicalKube (toolkit/kube/logical.py)."""

    kube: Any
    namespace: str
    name: str
    next_name: str
    next_pod: str
    old_pod: str
    container: str
    timeout: float
    state: Any

    # ---- what is recorded at preflight --------------------------------------------------------

    def standby_source(self, sts: dict[str, Any]) -> dict[str, Any]:
        """The standbys' part of describe(): replicas, the replication login, where they find NAME-next-0."""
        replicas = sts["spec"].get("replicas", 1)
        if replicas <= 1:
            return {"replicas": 1}
        topo = read_topology(self.kube, self.namespace, sts)
        labels = sts["spec"]["template"]["metadata"].get("labels") or {}
        per_pod = standby_services(self.kube.list("Service", self.namespace), sts, labels)
        return {"replicas": replicas, "replication_user": topo.replication_user, "standby_services": per_pod,
                "password_secret": topo.password_secret,
                "primary_host": self.new_primary_host(sts)}  # fmt: skip

    def new_primary_host(self, sts: dict[str, Any]) -> str:
        """Where a new standby finds NAME-next-0: its DNS name under NAME's headless Service, which
        selects NAME-next's pods from the hand-over on."""
        return f"{self.next_name}-0.{sts['spec'].get('serviceName')}.{self.namespace}.svc"

    def _source(self) -> dict[str, Any]:
        return self.describe()  # type: ignore[attr-defined]

    def find_standbys(self) -> list[str]:
        return [f"{self.name}-{i}" for i in range(1, self._source().get("replicas", 1))]

    # ---- the re-seed -----------------------------------------------------------------------------

    def next_standby(self, name: str) -> Standby:
        ordinal = int(name.rsplit("-", 1)[1])
        nxt = self.kube.get("StatefulSet", self.namespace, self.next_name)
        if nxt is None:
            raise PgleapError(f"StatefulSet {self.next_name} not found: the standbys cannot be re-seeded",
                              f"`{self.command('rollback')}` goes back to {self.name}")  # type: ignore[attr-defined]  # fmt: skip
        claim = lo.data_claim(nxt, self.container)
        return Standby(
            pod=f"{self.next_name}-{ordinal}", ordinal=ordinal, pvc=f"{claim}-{self.next_name}-{ordinal}"
        )

    def _ensure_claim(self, nxt: dict[str, Any], sb: Standby) -> None:
        if self.kube.get("PersistentVolumeClaim", self.namespace, sb.pvc) is None:
            self.kube.create(lo.standby_claim(nxt, self.container, sb.pvc))

    def reseed_job(
        self,
        nxt: dict[str, Any],
        sb: Standby,
        image: str,
        major: int,
        data_directory: str,
        source: dict[str, Any] | None = None,
    ) -> dict:
        """The reseed Job (in-place's template and reseed.sh) onto NAME-next-i's (or R-next-i's) empty
        claim; `source`: where the standby finds its primary (NAME-next-0), the replication login."""
        source = source or self._source()
        pod = nxt["spec"]["template"]["spec"]
        main = next(c for c in pod["containers"] if c["name"] == self.container)
        sec = lo.pod_security(nxt)
        view = JobView(self.namespace, self.container, JobCore(image, sec["runAsUser"], sec.get("runAsGroup")),
                       (pod.get("securityContext") or {}).get("fsGroup"))  # fmt: skip
        rel = self._data_rel(nxt, main, data_directory)
        env = {"PGLEAP_ACTION": "place", "PGLEAP_VOLUME": VOLUME_MOUNT, "PGLEAP_OLD_REL": rel,
               "PGLEAP_NEW_REL": rel, "PGLEAP_OLD_MAJOR": str(major), "PGLEAP_NEW_MAJOR": str(major),
               "PGLEAP_PRIMARY_HOST": source["primary_host"], "PGLEAP_REPLICATION_USER": source["replication_user"],
               "PGLEAP_SLOT": sb.slot}  # fmt: skip
        env_list: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in sorted(env.items())]
        if secret := source.get("password_secret"):  # from the user's Secret at the pod's start
            env_list.append({"name": "PGPASSWORD", "valueFrom": {"secretKeyRef": dict(secret)}})
        labels = {**lo.next_labels(self.name), LABEL_ACTION: "logical-reseed",
                  "pgleap.io/standby": sb.pod[:63].rstrip("-.")}  # fmt: skip
        return render.from_template(
            "replica-job.yaml.j2", plan=view, job_name=replica_job_name(sb.pod, "reseed"), action="reseed",
            command=render.reseed_command(), env=env_list, pod=render.job_pod_parts(view, nxt, ()),  # type: ignore[arg-type]
            labels=labels, annotations={}, scripts_cm=lo.config_map_name(self.name),
            container_security=render.container_security(view), volume_mount=VOLUME_MOUNT, claim=sb.pvc,  # type: ignore[arg-type]
        )  # fmt: skip

    def _data_rel(self, nxt: dict[str, Any], main: dict[str, Any], data_directory: str) -> str:
        """NAME-next-0's PGDATA inside its claim (the claim's subPath included): the standby's the same."""
        mount = lo.data_mount(nxt, self.container)
        sub = next((m.get("subPath", "") for m in main.get("volumeMounts") or []
                    if m["mountPath"].rstrip("/") == mount), "")  # fmt: skip
        inside = posixpath.relpath(data_directory, mount)
        if inside.startswith(".."):
            raise PgleapError(
                f"{self.next_pod} keeps its data in {data_directory}, outside its claim at {mount}"
            )
        rel = posixpath.normpath(posixpath.join(sub, inside))
        return "" if rel == "." else rel

    def reseed_standby(self, name: str, image: str) -> dict:
        """Standby `name` (NAME-i) as NAME-next-i: claim, reseed Job from NAME-next-0, scale, streaming."""
        sb = self.next_standby(name)
        return self.reseed_into(self.next_name, sb, image, self._source(),
                                lambda: self.point_standby_services("new", sb.ordinal))  # fmt: skip

    def reseed_into(
        self,
        sts_name: str,
        sb: Standby,
        image: str,
        source: dict[str, Any],
        moved: Any,
        pgdata: str | None = None,
    ) -> dict:
        """Pod `sb.pod` of StatefulSet `sts_name` (NAME-next or R-next) as a standby of NAME-next-0: its
        claim seeded by the reseed Job, the StatefulSet scaled to it, streaming checked, then `moved()`
        points its Services at it. Each step is idempotent: resume runs it again after a crash."""
        started = time.monotonic()
        nxt = self.kube.get("StatefulSet", self.namespace, sts_name)
        if nxt["spec"].get("replicas", 1) <= sb.ordinal:  # not yet running: seed its claim first
            self._carry_replication_hba()
            self._ensure_claim(nxt, sb)
            scripts = {k: (container_dir() / k).read_text() for k in RESEED_SCRIPTS}
            self.kube.patch("ConfigMap", self.namespace, lo.config_map_name(self.name), {"data": scripts})
            new = self.server(self.next_pod, "new server")  # type: ignore[attr-defined]
            major = int(new.query("postgres", "SHOW server_version_num")[0][0]) // 10000
            pgdata = pgdata or new.query("postgres", "SHOW data_directory")[0][0]
            job = self.reseed_job(nxt, sb, image, major, pgdata, source)
            job_name = job["metadata"]["name"]  # one an interrupted run left goes: reseed.sh starts again
            self.kube.delete("Job", self.namespace, job_name, propagation="Background")
            self.kube.wait(f"Job {job_name} gone", lambda: True if self.kube.get("Job", self.namespace, job_name)
                           is None else None, timeout=120)  # fmt: skip
            self.kube.create(job)
            self._finish(job["metadata"]["name"], f"re-seeding {sb.pod} from {self.next_pod}")
            self.kube.patch("StatefulSet", self.namespace, sts_name, {"spec": {"replicas": sb.ordinal + 1}})
        self._wait_ready(sb.pod)  # type: ignore[attr-defined]
        primary = self.server(self.next_name, "new server")  # type: ignore[attr-defined]

        def streaming() -> bool | None:
            return True if primary.query("postgres", STREAMING_SLOTS, ([sb.slot],)) else None

        self.kube.wait(f"standby {sb.pod} streaming from {self.next_pod}", streaming, timeout=self.timeout)
        lag = primary.query("postgres", LAG, (sb.slot,))
        moved()
        self.kube.delete("Job", self.namespace, replica_job_name(sb.pod, "reseed"), propagation="Background")
        return {
            "name": sb.pod,
            "seconds": time.monotonic() - started,
            "lag_bytes": int(lag[0][0]) if lag else 0,
        }

    def _finish(self, job: str, what: str) -> None:
        result = self.kube.wait(
            f"Job {job}",
            lambda: job_result(self.kube.get("Job", self.namespace, job) or {}),
            timeout=self.timeout,
        )
        if result != "Complete":
            raise PgleapError(f"{what} failed (Job {self.namespace}/{job}; the new primary serves)",
                              f"`kubectl logs -n {self.namespace} job/{job}` says why; fix it and "
                              f"`{self.command('resume')}`, or `{self.command('rollback')}`")  # type: ignore[attr-defined]  # fmt: skip

    def _carry_replication_hba(self) -> None:
        """NAME-next-0 was made by the image's initdb: the old primary's `host replication` lines go
        into its pg_hba.conf (once), so that the new standbys may stream from it."""
        old = self.server(self.old_pod, "old server")  # type: ignore[attr-defined]
        new = self.server(self.next_pod, "new server")  # type: ignore[attr-defined]
        query = ("SELECT line FROM regexp_split_to_table(pg_read_file(current_setting('hba_file')), E'\\n') line "
                 "WHERE line ~ '^\\s*host\\w*\\s+replication'")  # fmt: skip
        have = {r[0] for r in new.query("postgres", query)}
        missing = [r[0] for r in old.query("postgres", query) if r[0] not in have]
        if missing:
            hba = new.query("postgres", "SHOW hba_file")[0][0]
            self.kube.exec(self.namespace, self.next_pod, self.container,
                           ["sh", "-c", 'f="$1"; shift; printf "%s\\n" "$@" >> "$f"', "sh", hba, *missing])  # fmt: skip
            new.query("postgres", "SELECT pg_reload_conf()")

    def point_standby_services(self, which: str, ordinal: int | None = None) -> None:
        """The per-standby Services: to NAME-next-i ("new", once it streams) or back ("old")."""
        for svc, entry in (self._source().get("standby_services") or {}).items():
            if ordinal is None or entry["ordinal"] == ordinal:
                self.select(svc, entry[which])

    def select(self, svc: str, wanted: dict[str, str]) -> None:
        """Service `svc` (if it still exists) selects exactly `wanted` (a merge patch, only if it differs)."""
        live = self.kube.get("Service", self.namespace, svc)
        current = ((live or {}).get("spec") or {}).get("selector") or {}
        if live is not None and current != wanted:
            self.kube.patch("Service", self.namespace, svc, lo.selector_patch(current, wanted))
            self.log(f"Service {svc} now selects {wanted}")  # type: ignore[attr-defined]

    def standby_services_moved(self) -> list[str]:
        """Per-standby Services that do not select their NAME-next pod yet (finalize refuses)."""
        out = []
        for svc, entry in (self._source().get("standby_services") or {}).items():
            live = self.kube.get("Service", self.namespace, svc)
            if live is not None and ((live.get("spec") or {}).get("selector") or {}) != entry["new"]:
                out.append(svc)
        return out

    def restore_standby(self, name: str, image: str) -> None:
        """Rollback: nothing to do; the old standby never stopped (NAME-next went with remove_next)."""

    def finalize_standby(self, name: str, image: str) -> None:
        """Finalize: nothing apart; the old standbys went with NAME in remove_old."""

    def remove_standby_scratch(self) -> None:
        """No scratch volume on Kubernetes."""
