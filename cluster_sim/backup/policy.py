"""The backup policy API: the decisions a backup product (or an in-house script) makes about a job,
separated from the mechanics of the phases that carry them out.

A policy decides, for a job:

- **grouping**: which VMs go into which snapshot set (`snapshot_groups` for the per-node VSS
  generations ws2008r2/ws2012/ws2012r2: one storage snapshot per group, all of one CSV on one node;
  `snapshot_sets` for ws2016: one snapshot set per group, over every CSV its VMs use), and the node
  that takes a ws2016 set (`set_node`);
- **order**: which VMs go first (`order`: priorities, biggest first, by CSV, by owner node);
- **concurrency**: how many groups run at once per node (`groups_per_node`), how many ws2016
  checkpoints at once per node (`checkpoints_per_node`), how many snapshot groups or sets at once
  on the whole array (`sets_in_flight`, None: no limit);
- **pacing**: how long to wait before a group starts (`delay_group_s`, asked again after the wait
  until it answers 0);
- **failures**: what to do with a VM whose attempt failed (`on_vm_failed`: `Retry(after_s)` or
  `GiveUp()`);
- **signals**: how to react to the cluster during the job: a live migration requested for a VM in
  its critical section (`on_migration_request`: "ok", "refuse" or "abort"), a node failure
  (`on_node_failed`), a CSV owner change (`on_csv_owner_changed`), a VM's outcome (`on_vm_done`).

It sees the cluster through a read-only `ClusterView` and acts only through `Commands` (hold or
release a snapshot past its group's end, pause new groups on a node or everywhere, leave a note in
the trace). Every hook is called on the
single SimPy driver at a simulated instant, so a policy is deterministic if it uses nothing but its
arguments, the view and its own state (no wall clock, no global random numbers).

The generations' own behaviour is written with this API (backup/policies.py); a scenario names
another policy with `backup.policy` (`package.module:Class`, or an entry point of the
`cluster_sim.policies` group) and its arguments with `backup.policy_args`, validated by the
policy's `Args` model (a pydantic model; extra fields are refused).

    class BiggestFirst(Policy):
        '''Back up the biggest VMs first.'''

        def order(self, view, vms):
            return sorted(vms, key=lambda vm: (-view.disk_mib(vm), vm))
"""

from __future__ import annotations

import math
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from cluster_sim.scenario.policy_ref import resolve_policy_class, validate_policy_args

if TYPE_CHECKING:
    from cluster_sim.backup.job import BackupJob
    from cluster_sim.cluster.storage import StorageSnapshot
    from cluster_sim.scenario import Backup

MigrationAnswer = Literal["ok", "refuse", "abort"]


class NoArgs(BaseModel):
    """The arguments of a policy that takes none (`backup.policy_args` must be empty)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class PolicyError(RuntimeError):
    """A policy answered something the backup cannot carry out (names the policy and the hook)."""


@dataclass(frozen=True)
class Retry:
    """Try the VM again `after_s` seconds from now (once its host is settled)."""

    after_s: float


@dataclass(frozen=True)
class GiveUp:
    """The VM's outcome is `failed` with the failure's reason."""


Decision = Retry | GiveUp


@dataclass(frozen=True)
class VmFailure:
    """An attempt that failed, as `on_vm_failed` sees it."""

    vm: str
    reason: str  # backup/ledger.py Failure (or a snapshot fault's code)
    attempt: int  # 1 for the first attempt; counts again from 1 after a restarted job
    permanent: bool  # a property of the VM: a retry cannot cure it (ledger.PERMANENT)
    node: str  # where the attempt began
    snapshot_id: str | None  # the storage snapshot its group committed, if the job still holds it


class ClusterView:
    """What a policy may read of the cluster and the job, at the current simulated instant. Nothing
    here changes anything."""

    def __init__(self, job: BackupJob):
        self._job = job
        self._cm = job.cm

    # -- time and job --
    @property
    def now_s(self) -> float:
        return float(self._cm.env.now)

    @property
    def generation(self) -> str:
        return self._job.gen

    @property
    def job_mode(self) -> str:
        """full | incremental"""
        return self._job.mode

    @property
    def job_index(self) -> int:
        return self._job.index

    # -- nodes --
    @property
    def nodes(self) -> tuple[str, ...]:
        return tuple(self._cm.nodes)

    def node_is_up(self, node: str) -> bool:
        """A member in the cluster service's view."""
        return self._cm.is_up(node)

    def node_is_alive(self, node: str) -> bool:
        """Physically running (a crashed host is dead before the cluster notices)."""
        return self._cm.is_alive(node)

    def node_has_storage_path(self, node: str) -> bool:
        return self._cm.has_fabric(node)

    # -- VMs --
    @property
    def vms(self) -> tuple[str, ...]:
        return tuple(sorted(self._job.records))

    def host_of(self, vm: str) -> str:
        return self._cm.host_of(vm)

    def vms_on(self, node: str) -> list[str]:
        return [vm for vm in sorted(self._job.records) if self._cm.host_of(vm) == node]

    def csv_of(self, vm: str) -> str:
        return self._job.records[vm].spec.csv

    def disk_mib(self, vm: str) -> float:
        """The VM's virtual disks' provisioned size, MiB."""
        return float(sum(d.size_mib for d in self._job.records[vm].spec.disks))

    def vm_state(self, vm: str) -> str:
        """running | saved | migrating | booting | unplaced | host_down"""
        cm = self._cm
        if cm.is_unplaced(vm):
            return "unplaced"
        if cm.is_booting(vm):
            return "booting"
        if cm.is_migrating(vm):
            return "migrating"
        if vm in self._job.saved_vms:
            return "saved"
        host = cm.host_of(vm)
        return "running" if cm.is_alive(host) and cm.is_up(host) else "host_down"

    def in_critical_section(self, vm: str) -> bool:
        """Between the guest freeze and the end of the snapshot (a migration must wait, or abort)."""
        return vm in self._job.critical

    def outcome(self, vm: str) -> str | None:
        return self._job.records[vm].outcome

    def attempts(self, vm: str) -> int:
        return self._job.records[vm].attempts

    # -- storage --
    @property
    def csvs(self) -> tuple[str, ...]:
        return tuple(vol.name for vol in self._cm.csvs)

    def csv_owner(self, csv: str) -> str:
        """The CSV's coordinator node."""
        return self._cm.coordinator(csv)

    def snapshots_on(self, csv: str) -> int:
        """Storage snapshots existing now on the CSV's LUN."""
        return len(self._cm.array.luns[csv].existing)

    @property
    def snapshots_pending(self) -> int:
        """LUN snapshots requested at the array and not yet committed."""
        return self._cm.array.pending

    @property
    def max_snapshots_per_lun(self) -> int:
        return self._cm.array.cfg.max_snapshots_per_lun

    def latency_p99_ms(self) -> float | None:
        """The VMs' I/O latency now, 99th percentile over their I/O, ms (None while no VM does I/O)."""
        return self._cm.io.latency_now_ms(99.0)


class Commands:
    """What a policy may do beyond its answers."""

    def __init__(self, job: BackupJob):
        self._job = job

    def hold_snapshot(self, snapshot_id: str) -> None:
        """Keep this storage snapshot after its group ends (to read it again on a retry, or for an
        investigation); it stays until `release_snapshot`. A snapshot held to the end is a leak."""
        job = self._job
        if snapshot_id not in job.held_snaps:
            raise PolicyError(f"hold_snapshot({snapshot_id!r}): the job does not hold that snapshot")
        job.policy_holds[snapshot_id] = job.policy_holds.get(snapshot_id, 0) + 1

    def release_snapshot(self, snapshot_id: str) -> None:
        """Give back one hold; the last one deletes the snapshot (unless its group still uses it:
        then the group deletes it when it ends, as usual)."""
        job = self._job
        n = job.policy_holds.get(snapshot_id, 0)
        if n <= 0:
            raise PolicyError(f"release_snapshot({snapshot_id!r}): not held by the policy")
        if n > 1:
            job.policy_holds[snapshot_id] = n - 1
            return
        del job.policy_holds[snapshot_id]
        parked = job.policy_parked.pop(snapshot_id, None)
        if parked is not None:  # its group has ended: delete it now
            node, snap, surfaced = parked
            job.track(job.dispose(node, [snap], surfaced=surfaced))

    def pause_new_groups(self, seconds: float, node: str | None = None) -> None:
        """No new snapshot group (ws2016: set) starts on `node` (None: on any node) for `seconds`
        from now; groups under way go on. E.g. on a node failure, wait until the failover settles."""
        if not (isinstance(seconds, int | float) and math.isfinite(seconds) and seconds >= 0):
            raise PolicyError(f"pause_new_groups: seconds must be a finite number >= 0, got {seconds!r}")
        job = self._job
        key = node if node is not None else "*"
        job.paused_until[key] = max(job.paused_until.get(key, 0.0), job.env.now + float(seconds))

    def note(self, event: str, **fields: Any) -> None:
        """A `policy_<event>` line in the trace (trace.jsonl), stamped with the simulated time."""
        self._job.trace(f"policy_{event}", **fields)


class Policy:
    """The base of every backup policy: each hook's default is what a plain backup does. Subclass it
    and override what you decide differently; give it an `Args` model for its arguments."""

    __cluster_sim_policy__: ClassVar[bool] = True  # recognised by the scenario's checks
    Args: ClassVar[type[BaseModel]] = NoArgs

    def __init__(self, args: BaseModel, cfg: Backup):
        self.args = args  # an instance of Args
        self.cfg = cfg  # the scenario's `backup` section (read-only)

    @property
    def name(self) -> str:
        return f"{type(self).__module__}:{type(self).__qualname__}"

    # -- the job --
    def on_job_start(self, view: ClusterView, cmd: Commands) -> None:
        """The job starts (before any VM's first attempt)."""

    # -- order and grouping --
    def order(self, view: ClusterView, vms: list[str]) -> list[str]:
        """The VMs in the order their work is queued (default: by name)."""
        return list(vms)

    def snapshot_groups(self, view: ClusterView, node: str, vms: list[str]) -> list[list[str]]:
        """ws2008r2/ws2012/ws2012r2: `node`'s VMs (in `order`) as groups, one storage snapshot each,
        in the order they are worked on. Every VM of a group must be on one CSV. Default: by CSV
        (in name order), then `vms_per_snapshot` at a time."""
        k = self.cfg.vms_per_snapshot
        by_csv: dict[str, list[str]] = {}
        for vm in vms:
            by_csv.setdefault(view.csv_of(vm), []).append(vm)
        out: list[list[str]] = []
        for csv in sorted(by_csv):
            names = by_csv[csv]
            out += [names[i : i + k] for i in range(0, len(names), k)]
        return out

    def snapshot_sets(self, view: ClusterView, vms: list[str]) -> list[list[str]]:
        """ws2016: the VMs whose checkpoints are ready, as snapshot sets (one set each, over every
        CSV its VMs use), in order. Default: the CSVs in name order, `max_luns_per_set` per set."""
        luns = sorted({view.csv_of(vm) for vm in vms})
        per_set = self.cfg.max_luns_per_set
        out = []
        for i in range(0, len(luns), per_set):
            chunk = set(luns[i : i + per_set])
            out.append([vm for vm in vms if view.csv_of(vm) in chunk])
        return out

    def set_node(self, view: ClusterView, csvs: list[str]) -> str:
        """ws2016: the node that takes a snapshot set over these CSVs. Default: the backup
        application knows the cluster service's view, not which host just died; it takes the set on
        a node that reaches the storage if one does: the first such node (`ws2016_set_node: first`)
        or the one coordinating most of the set's CSVs (`least_loaded`)."""
        up = [n for n in view.nodes if view.node_is_up(n)]
        if not all(view.node_has_storage_path(n) for n in up):
            up = [n for n in up if view.node_has_storage_path(n)] or up
        if self.cfg.ws2016_set_node == "first" or not up:
            return up[0] if up else view.nodes[0]
        owned = {n: sum(1 for c in csvs if view.csv_owner(c) == n) for n in up}
        return max(up, key=lambda n: (owned[n], -up.index(n)))

    # -- concurrency and pacing --
    def groups_per_node(self, view: ClusterView, node: str) -> int:
        """ws2008r2/ws2012/ws2012r2: groups worked on at once on a node. Default:
        ceil(concurrent_vms_per_node / vms_per_snapshot)."""
        return max(1, math.ceil(self.cfg.concurrent_vms_per_node / self.cfg.vms_per_snapshot))

    def checkpoints_per_node(self, view: ClusterView, node: str) -> int:
        """ws2016: checkpoints made at once on a node. Default: concurrent_vms_per_node."""
        return self.cfg.concurrent_vms_per_node

    def sets_in_flight(self, view: ClusterView) -> int | None:
        """Snapshot groups (or ws2016 sets) in progress at once on the whole array, from the start
        of a group to the end of its copies; None: no limit (default)."""
        return None

    def delay_group_s(self, view: ClusterView, node: str, vms: list[str]) -> float:
        """Seconds to wait before this group starts; asked again after the wait, until 0 (default: 0)."""
        return 0.0

    # -- failures and outcomes --
    def on_vm_failed(self, view: ClusterView, cmd: Commands, failure: VmFailure) -> Decision:
        """Default: a failure a retry can cure is retried after `retry_wait_s`, at most `retries`
        times; a permanent one fails the VM at once."""
        if not failure.permanent and failure.attempt <= self.cfg.retries:
            return Retry(self.cfg.retry_wait_s)
        return GiveUp()

    def on_vm_done(self, view: ClusterView, cmd: Commands, vm: str, outcome: str, reason: str) -> None:
        """The VM has its one outcome for this job."""

    # -- signals --
    def on_migration_request(self, view: ClusterView, vm: str) -> MigrationAnswer:
        """A live migration wants to move a VM that is in its critical section. Default: the
        scenario's `migration_policy` (block_and_retry: refuse; abort_backup: abort; allow: ok)."""
        return {"block_and_retry": "refuse", "abort_backup": "abort"}.get(self.cfg.migration_policy, "ok")  # type: ignore[return-value]

    def on_node_failed(self, view: ClusterView, cmd: Commands, node: str) -> None:
        """The cluster service declared a node failed (its VMs fail over)."""

    def on_csv_owner_changed(self, view: ClusterView, cmd: Commands, csv: str, previous: str, owner: str) -> None:
        """A CSV's coordinator moved."""


def is_policy_class(obj: Any) -> bool:
    return isinstance(obj, type) and issubclass(obj, Policy)


def _misplaced(given: Sequence[str], flat: list[str]) -> str | None:
    if len(flat) == len(given) and set(flat) == set(given):
        return None
    seen: set[str] = set()
    again: set[str] = set()
    for vm in flat:
        (again if vm in seen else seen).add(vm)
    twice = sorted(again)
    return (f"missing {sorted(set(given) - set(flat))[:5]}, not given {sorted(set(flat) - set(given))[:5]}, "
            f"twice {twice[:5]}")


def check_order(policy: Policy, given: Sequence[str], order: Any) -> list[str]:
    """A policy's `order` must return the VMs it was given, each once."""
    if not isinstance(order, list | tuple):
        raise PolicyError(f"{policy.name}.order must return a list of VM names, got {order!r:.80}")
    bad = _misplaced(given, list(order))
    if bad:
        raise PolicyError(f"{policy.name}.order must return each VM it was given exactly once ({bad})")
    return list(order)


def check_groups(policy: Policy, hook: str, given: Sequence[str], groups: Any, csv_of: Any,
                 one_csv: bool) -> list[list[str]]:
    """A policy's groups must use each given VM exactly once (and one CSV per group if `one_csv`)."""
    if not isinstance(groups, list | tuple) or not all(isinstance(g, list | tuple) for g in groups):
        raise PolicyError(f"{policy.name}.{hook} must return a list of lists of VM names, got {groups!r:.80}")
    bad = _misplaced(given, [vm for g in groups for vm in g])
    if bad:
        raise PolicyError(f"{policy.name}.{hook} must place each VM it was given exactly once ({bad})")
    if one_csv:
        for g in groups:
            if len({csv_of(vm) for vm in g}) > 1:
                raise PolicyError(f"{policy.name}.{hook}: a group's VMs must share one CSV, got {list(g)[:5]}")
    return [list(g) for g in groups if g]


def paced(job: BackupJob, node: str, vms: list[str]) -> Generator[Any, Any, None]:
    """The policy's pacing before a group or set starts: wait while `pause_new_groups` holds and as
    long as `delay_group_s` asks (no wait asked: no event at all, so the built-in runs are unchanged)."""
    while True:
        paused = max(job.paused_until.get(node, 0.0), job.paused_until.get("*", 0.0)) - job.env.now
        delay = paused if paused > 0 else job.policy.delay_group_s(job.view, node, list(vms))
        if not delay > 0:
            return
        if not math.isfinite(delay):
            raise PolicyError(f"{job.policy.name}.delay_group_s must return a finite number of seconds, got {delay!r}")
        yield job.env.timeout(delay)


def park_held(job: BackupJob, node: str, snaps: list[StorageSnapshot], surfaced: bool) -> list[StorageSnapshot]:
    """A group is done with its snapshots: those the policy holds wait for `release_snapshot`;
    returns the others (to delete now)."""
    for snap in snaps:
        if snap.sid in job.policy_holds:
            job.policy_parked[snap.sid] = (node, snap, surfaced)
    return [s for s in snaps if s.sid not in job.policy_holds]


def make_policy(cfg: Backup) -> Policy:
    """The policy of a generation's jobs: the one `backup.policy` names, with its arguments, or the
    built-in one (this base class: what every generation does by itself)."""
    if cfg.policy is None:
        return Policy(NoArgs(), cfg)
    cls = resolve_policy_class(cfg.policy)  # checked when the scenario was loaded
    return cls(validate_policy_args(cls, cfg.policy_args), cfg)  # type: ignore[no-any-return]


def retry_after_s(policy: Policy, decision: Any) -> float | None:
    """A decision of `on_vm_failed` as the wait before the retry (None: give up)."""
    if isinstance(decision, GiveUp):
        return None
    if isinstance(decision, Retry) and isinstance(decision.after_s, int | float) and math.isfinite(decision.after_s) \
            and decision.after_s >= 0:
        return float(decision.after_s)
    raise PolicyError(f"{policy.name}.on_vm_failed must return Retry(after_s >= 0) or GiveUp(), got {decision!r:.80}")
