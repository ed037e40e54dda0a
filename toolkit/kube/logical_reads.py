"""A separate read StatefulSet R (topology primary-read) under `--strategy logical` on Kubernetes.

R's pods stream from NAME-0. R keeps running, untouched, until finalize, so rollback finds it as it
was. After the switch (NAME's Services select NAME-next's pods, so `NAME-next-0.<serviceName>`
resolves) R-next is made like NAME-next (`lo.next_statefulset`: R's pod spec on the new image,
pgleap's labels only so no user Service selects it, its own claims, no owner) with 0 replicas and
its primary-host env (POSTGRES_PRIMARY_HOST / POSTGRES_MASTER_HOST / PRIMARY_HOST) rewritten to
NAME-next-0. Each ordinal i gets its claim seeded by the reseed Job from NAME-next-0 (whose
primary_conninfo names NAME-next-0 too) and R-next is scaled to i+1 (`LogicalStandbys.reseed_into`,
as for NAME's own standbys); once R-next-i streams, R's Services (recorded with their selectors at
preflight) select R-next's pods, and one that selected R-i alone (pod-name/pod-index) selects R-next-i. Rollback deletes R-next and its claims and gives R's Services
their selectors back; finalize deletes R and its claims.

Still refused before anything changes, each by name: an R pgleap does not understand as standbys
(topology.py's problem), R at 0 replicas, Services selecting R's pods by labels pgleap cannot map
to R-next's (neither R's template labels nor one pod's pod-name/pod-index), R numbering its
pods from another ordinal than 0, R's postgres container named unlike NAME's, and a NAME whose
standbys could not reach NAME-next-0 by name (no headless Service selecting its pods).
"""

from __future__ import annotations

from typing import Any

from toolkit.errors import PgleapError
from toolkit.kube import logical_objects as lo
from toolkit.kube.facts import find_postgres_container
from toolkit.kube.logical_standbys import LogicalStandbys, read_topology, standby_services
from toolkit.kube.objects import replica_job_name
from toolkit.kube.topology import HOST_ENV, Standby, Topology


def read_next_statefulset(
    read: dict[str, Any], *, container: str, new_image: str, new_major: int, primary_host: str
) -> dict[str, Any]:
    """R as R-next (rendered as NAME-next is), 0 replicas (each ordinal is seeded before it runs),
    its primary-host env pointing at NAME-next-0."""
    main = next(c for c in read["spec"]["template"]["spec"]["containers"] if c["name"] == container)
    nxt = lo.next_statefulset(read, container=container, old_image=main["image"], new_image=new_image,
                              new_major=new_major)  # fmt: skip
    nxt["spec"]["replicas"] = 0
    new_main = next(c for c in nxt["spec"]["template"]["spec"]["containers"] if c["name"] == container)
    for entry in new_main.get("env") or []:
        if entry["name"] in HOST_ENV:
            entry.pop("valueFrom", None)
            entry["value"] = primary_host
    return nxt


def read_refusals(topo: Topology, sts: dict[str, Any], source: dict[str, Any], container: str) -> list:
    """(message, hint) for the shapes of a read StatefulSet the logical path cannot carry."""
    if topo.kind != "primary-read":
        return []
    name, read_name = sts["metadata"]["name"], topo.replica_sts
    if topo.problem:
        return [(topo.problem, topo.hint),
                (f"StatefulSet {name} has a separate read StatefulSet {read_name} ({topo.replica_count} pod(s), "
                 f"not understood as standbys of {name}-0); --strategy logical re-seeds only standbys it "
                 "understands", f"fix the refusal above first (in place refuses it too); or `kubectl delete "
                 f"sts {read_name}` and its PVCs before the upgrade and re-create it after finalize")]  # fmt: skip
    read, out = source.get("read") or {}, []
    other = f"use --strategy inplace (it re-seeds {read_name} in place)"
    if not read.get("replicas"):
        out.append((f"read StatefulSet {read_name} has 0 replicas: its claims hold the old major's data and "
                    f"nothing would seed {lo.next_name(read_name or '')}",
                    f"scale {read_name} to 1 or more first, or delete it and its PVCs; or {other}"))  # fmt: skip
    if per_pod := read.get("per_pod"):
        out.append((f"Service(s) {', '.join(per_pod)} select pods of read StatefulSet {read_name} by labels "
                    "pgleap cannot map to R-next's pods; --strategy logical moves Services that select them by "
                    "the template's labels, or one pod by its pod-name or pod-index label",
                    f"select the pods that way, or {other}"))  # fmt: skip
    if ((read.get("spec") or {}).get("ordinals") or {}).get("start"):
        out.append((f"read StatefulSet {read_name} numbers its pods from another ordinal than 0", other))
    if read and read.get("container") != container:
        out.append((f"read StatefulSet {read_name}'s postgres container is {read.get('container')!r}, "
                    f"{name}'s is {container!r}", f"name them alike, or {other}"))  # fmt: skip
    svc = sts["spec"].get("serviceName")
    if svc not in (source.get("services") or {}):
        out.append((f"the standbys of read StatefulSet {read_name} would reach {lo.next_name(name)}-0 through "
                    f"Service {svc or '(none)'}, which does not select {name}'s pods by their template labels",
                    f"give {name} a headless Service that selects its pods (spec.serviceName), or {other}"))  # fmt: skip
    return out


def plan_lines(source: dict[str, Any]) -> list[str]:
    """What happens to a read StatefulSet, for `plan sts --strategy logical`."""
    read = source.get("read")
    if not read:
        return []
    r, nxt = read["statefulset"], read["next"]
    lines = [f"StatefulSet {nxt}: the read StatefulSet {r} on the new image (pgleap's labels only, its own PVCs, "
             f"primary host {read['primary_host']}); after the switch each {nxt}-i (of {read['replicas']}) "
             f"gets its claim seeded by Job pgleap-{nxt}-i-reseed (pg_basebackup from {source['next']}-0) and "
             f"streams before the next; {r} keeps following {source['statefulset']}-0 until finalize deletes "
             "it and its PVCs; rollback deletes " + nxt]  # fmt: skip
    wanted = ", ".join(f"{k}={v}" for k, v in lo.next_labels(r).items())
    for svc, selector in read["services"].items():
        old = ", ".join(f"{k}={v}" for k, v in selector.items())
        lines.append(
            f"Service {svc}: selector {{{old}}} -> {{{wanted}}} once {nxt}-0 streams (restored by rollback)"
        )
    for svc, entry in (read.get("pod_services") or {}).items():
        lines.append(
            f"Service {svc}: selects {nxt}-{entry['ordinal']} once it streams (restored by rollback)"
        )
    return lines


class LogicalReads(LogicalStandbys):
    """The read StatefulSet's part of the standby hooks (mixed into LogicalKube)."""

    def standby_source(self, sts: dict[str, Any]) -> dict[str, Any]:
        return {**super().standby_source(sts), **self._read_part(sts)}

    def _read_part(self, sts: dict[str, Any]) -> dict[str, Any]:
        topo = read_topology(self.kube, self.namespace, sts)
        if topo.kind != "primary-read" or topo.problem or not topo.replica_sts:
            return {}
        read = self.kube.get("StatefulSet", self.namespace, topo.replica_sts)
        labels = read["spec"]["template"]["metadata"].get("labels") or {}
        mine = self.services()  # type: ignore[attr-defined]  # NAME's: they move at the switch
        every = self.kube.list("Service", self.namespace)
        services = {n: s for n, s in lo.selecting_services(every, labels).items() if n not in mine}
        per_pod = {n: e for n, e in standby_services(every, read, labels, first=0).items() if n not in mine}
        nxt, count = lo.next_name(topo.replica_sts), topo.replica_count
        return {"read": {"statefulset": topo.replica_sts, "next": nxt, "replicas": count,
                         "container": find_postgres_container(read)["name"], "services": services,
                         "pod_services": per_pod, "per_pod": sorted(set(topo.read_services) - {*services, *per_pod}),
                         "spec": {"ordinals": read["spec"].get("ordinals")},
                         "primary_host": self.new_primary_host(sts),
                         "replication_user": topo.replication_user, "password_secret": topo.password_secret,
                         "old_claims": self._claims(topo.replica_sts, read, count),  # type: ignore[attr-defined]
                         "next_claims": self._claims(nxt, read, count)}}  # type: ignore[attr-defined]  # fmt: skip

    def _read(self) -> dict[str, Any]:
        return self._source().get("read") or {}

    def find_standbys(self) -> list[str]:
        read = self._read()
        return super().find_standbys() + [
            f"{read['statefulset']}-{i}" for i in range(read.get("replicas", 0))
        ]

    def reseed_standby(self, name: str, image: str) -> dict:
        read = self._read()
        if not read or name.rsplit("-", 1)[0] != read["statefulset"]:
            return super().reseed_standby(name, image)
        ordinal, nxt_name = int(name.rsplit("-", 1)[1]), read["next"]
        nxt = self.kube.get("StatefulSet", self.namespace, nxt_name)
        if nxt is None:
            original = self.kube.get("StatefulSet", self.namespace, read["statefulset"])
            if original is None:
                raise PgleapError(f"read StatefulSet {read['statefulset']} not found: {nxt_name} cannot be made",
                                  f"`{self.command('rollback')}` goes back")  # type: ignore[attr-defined]  # fmt: skip
            nxt = read_next_statefulset(original, container=self.container, new_image=image,
                                        new_major=self.target_major(image),  # type: ignore[attr-defined]
                                        primary_host=read["primary_host"])  # fmt: skip
            self.kube.create(nxt)
            self.log(f"created StatefulSet {nxt_name} on {image} (0 replicas)")  # type: ignore[attr-defined]
        claim = lo.data_claim(nxt, self.container)
        sb = Standby(pod=f"{nxt_name}-{ordinal}", ordinal=ordinal, pvc=f"{claim}-{nxt_name}-{ordinal}")
        main = next(c for c in nxt["spec"]["template"]["spec"]["containers"] if c["name"] == self.container)
        pgdata = next((e.get("value") for e in main.get("env") or [] if e["name"] == "PGDATA"), None)
        return self.reseed_into(
            nxt_name, sb, image, read, lambda: self.point_read_services("new", ordinal), pgdata
        )

    def point_read_services(self, which: str, ordinal: int | None = None) -> None:
        """R's Services: to R-next's pods ("new", once one streams) or their recorded selectors ("old");
        one selecting the single pod R-i: to R-next-i once that streams (`ordinal`), or back."""
        read = self._read()
        for svc, original in (read.get("services") or {}).items():
            self.select(svc, lo.next_labels(read["statefulset"]) if which == "new" else original)
        for svc, entry in (read.get("pod_services") or {}).items():
            if ordinal is None or entry["ordinal"] == ordinal:
                self.select(svc, entry[which])

    def point_standby_services(self, which: str, ordinal: int | None = None) -> None:
        super().point_standby_services(which, ordinal)
        if ordinal is None:  # every one (rollback's hand-back): R's too
            self.point_read_services(which)

    def standby_services_moved(self) -> list[str]:
        read = self._read()
        wanted = lo.next_labels(read["statefulset"]) if read else {}
        wants = {**{svc: wanted for svc in read.get("services") or {}},
                 **{svc: e["new"] for svc, e in (read.get("pod_services") or {}).items()}}  # fmt: skip
        waiting = [svc for svc, want in wants.items()
                   if ((self.kube.get("Service", self.namespace, svc) or {}).get("spec") or {}).get("selector")
                   not in (want, None)]  # fmt: skip
        return super().standby_services_moved() + waiting

    def remove_read_next(self) -> None:
        """Rollback: R-next with its claims (and a reseed Job a failed re-seed left); R never stopped."""
        if read := self._read():
            self._remove(read["next"], read["next_claims"], read["replicas"])  # type: ignore[attr-defined]
            for i in range(read["replicas"]):
                self.kube.delete("Job", self.namespace, replica_job_name(f"{read['next']}-{i}", "reseed"),
                                 propagation="Background")  # fmt: skip

    def remove_read_old(self) -> None:
        """Finalize: R with its claims (R-next serves the reads from then on)."""
        if read := self._read():
            self._remove(read["statefulset"], read["old_claims"], read["replicas"])  # type: ignore[attr-defined]
