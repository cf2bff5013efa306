"""CPU time by process and role over a measured window, for CPU per output token.

A server's whole process tree (``serve run`` with its local Ray, or vLLM's
API server) is snapshotted before and after a load level; each process's
user + system CPU over the window is charged to a role:

- ``ingress``: what terminates HTTP: Serve's ProxyActor, haproxy and its
  manager actor; vLLM's API server process (HTTP, output processing,
  detokenizing, JSON: vLLM's whole data path).
- ``router``: our Router replicas.
- ``replica``: our LLMReplica actors (vLLM's AsyncLLM front end runs here:
  its output processing is ours to count, as it is in vLLM's API server);
  in the direct topology the LLMServer replicas, which are also the router.
- ``engine``: vLLM's EngineCore and worker processes (the same in both).
- ``ray``: Ray's own processes (GCS, raylet, Serve controller, the adapter
  manager, the ``serve run`` driver, dashboard agents): per second, not per
  token, reported apart.

The data path is ingress + router + replica. Processes that start during a
window are charged from zero; ones that exit during it are lost (none should).
A process is the same across a window when its pid and start time are: Ray
retitles an actor's process with the task it runs (``ray::ServeController``,
then ``ray::ServeController.listen_for_change``), so a title is no identity.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DATA_PATH = ("ingress", "router", "replica")
ROLES = (*DATA_PATH, "engine", "ray")


def role_of(cmdline: str, is_root: bool, root_role: str) -> str:
    """The role of one process, from its command line (Ray sets actor process titles)."""
    if "EngineCore" in cmdline or "VLLM::Worker" in cmdline or "VllmWorker" in cmdline:
        return "engine"
    if "ServeReplica" in cmdline:
        if ":Router" in cmdline:
            return "router"
        if ":LLMReplica" in cmdline or ":LLMServer" in cmdline:
            return "replica"
        return "ray"  # the adapter manager: control plane
    if "ProxyActor" in cmdline or "HAProxy" in cmdline or cmdline.split(" ", 1)[0].endswith("haproxy"):
        return "ingress"
    return root_role if is_root else "ray"


@dataclass
class Proc:
    pid: int
    name: str
    role: str
    cpu_s: float
    # When the process started (psutil's create_time): with the pid, its identity.
    started: float = 0.0


def _label(cmdline: str) -> str:
    head = cmdline.split(" ", 1)[0]
    if head.startswith("ray::") or head.startswith("VLLM::"):
        return head
    for word in cmdline.split():
        if word.endswith(("gcs_server", "raylet", "haproxy")) or word.startswith("vllm.entrypoints"):
            return word.rsplit("/", 1)[-1]
    return head.rsplit("/", 1)[-1][:40]


def snapshot(root_pid: int, root_role: str) -> dict[int, Proc]:
    """CPU seconds so far of the root and every descendant, by pid."""
    import psutil

    try:
        root = psutil.Process(root_pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return {}
    out = {}
    parents: dict[int, int] = {}
    for p in procs:
        try:
            with p.oneshot():
                t = p.cpu_times()
                cmd = " ".join(p.cmdline()) or p.name()
                started = p.create_time()
                parents[p.pid] = p.ppid()
        except psutil.Error:
            continue
        role = role_of(cmd, p.pid == root_pid, root_role)
        out[p.pid] = Proc(p.pid, _label(cmd), role, t.user + t.system, started)
    for proc in out.values():
        if proc.role == "ray" and _under_replica(proc.pid, parents, out):
            # vLLM's engine processes under a replica whose title psutil did not
            # read (seen with a gang's engine core): the engine, not Ray.
            proc.role = "engine"
    return out


def _under_replica(pid: int, parents: dict[int, int], procs: dict[int, Proc]) -> bool:
    """Whether a non-actor process descends from one of our engine replicas (its engine core, workers)."""
    if procs[pid].name.startswith("ray::"):
        return False
    seen = set()
    while pid in parents and pid not in seen:
        seen.add(pid)
        pid = parents[pid]
        if pid in procs and procs[pid].role == "replica":
            return True
    return False


@dataclass
class Window:
    """CPU charged per process over one window, and the output tokens it streamed."""

    tokens: int
    procs: list[Proc] = field(default_factory=list)
    # How long the load generator's event loop waited for a CPU while runnable
    # (its run-queue wait, ``client_wait_s``): seconds of it in a level mean
    # the level measured the client, not the server.
    client_wait_s: float = 0.0

    @classmethod
    def between(
        cls, before: dict[int, Proc], after: dict[int, Proc], tokens: int, client_wait_s: float = 0.0
    ) -> Window:
        procs = []
        for pid, p in after.items():
            start = before.get(pid)
            used = p.cpu_s - (start.cpu_s if start is not None and start.started == p.started else 0.0)
            procs.append(Proc(pid, p.name, p.role, max(used, 0.0), p.started))
        return cls(tokens, procs, client_wait_s)

    def us_per_token(self, role: str) -> float:
        return 1e6 * sum(p.cpu_s for p in self.procs if p.role == role) / max(self.tokens, 1)

    def data_path_us(self) -> float:
        return sum(self.us_per_token(r) for r in DATA_PATH)

    def busiest(self) -> Proc | None:
        """The process of the data path with the most CPU (the one that caps throughput)."""
        path = [p for p in self.procs if p.role in DATA_PATH]
        return max(path, key=lambda p: p.cpu_s, default=None)

    def summary(self) -> dict:
        busy = self.busiest()
        return {
            "tokens": self.tokens,
            **{f"{r}_us": round(self.us_per_token(r), 1) for r in ROLES},
            "data_path_us": round(self.data_path_us(), 1),
            "busiest": None if busy is None else busy.name,
            "busiest_us": None if busy is None else round(1e6 * busy.cpu_s / max(self.tokens, 1), 1),
            "client_wait_ms": round(1000 * self.client_wait_s, 1),
            "processes": sorted(
                (
                    {"pid": p.pid, "name": p.name, "role": p.role, "cpu_s": round(p.cpu_s, 3)}
                    for p in self.procs
                    if p.cpu_s > 0
                ),
                key=lambda d: -d["cpu_s"],
            ),
        }


def merge(windows: list[Window]) -> Window:
    """Several windows of one server as one (per pid, CPU summed)."""
    by_pid: dict[int, Proc] = {}
    for w in windows:
        for p in w.procs:
            if p.pid in by_pid:
                by_pid[p.pid].cpu_s += p.cpu_s
            else:
                by_pid[p.pid] = Proc(p.pid, p.name, p.role, p.cpu_s, p.started)
    return Window(sum(w.tokens for w in windows), list(by_pid.values()), sum(w.client_wait_s for w in windows))


def run_queue_wait_s(path: str = "/proc/thread-self/schedstat") -> float:
    """Seconds a thread (by default the calling one) has waited, runnable, for a CPU.

    The second field of the kernel's schedstat; 0.0 where it is not available.
    """
    try:
        with open(path) as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0
