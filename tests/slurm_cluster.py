"""A throwaway single-node SLURM cluster for tests: munged, slurmctld and slurmd from Debian's packages.

Everything lives in one temporary directory (config, state, spool, logs, the munge socket), on ports
picked at start, so it neither needs nor touches a system SLURM or munge; ``stop()`` ends the three
daemons it started (by pid) and every job they ran. Client commands find it through ``SLURM_CONF``.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

#: the binaries a cluster needs, and the Debian packages that hold them
BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel")
INSTALL = "apt-get install -y slurmctld slurmd slurm-client munge   (Debian/Ubuntu, as root)"


def missing() -> str | None:
    """Why a cluster cannot be started here (None: it can)."""
    absent = [b for b in BINARIES if shutil.which(b) is None]
    if absent:
        return f"SLURM tests need {', '.join(absent)}: {INSTALL}"
    if os.geteuid() != 0:
        return "SLURM tests start slurmd, which runs jobs as their user: run them as root (CI does)"
    try:
        pwd.getpwnam("munge")
    except KeyError:
        return f"SLURM tests need the munge user (the munge package creates it): {INSTALL}"
    if not Path("/etc/munge/munge.key").exists():
        return "SLURM tests need /etc/munge/munge.key (the munge package creates it: dpkg-reconfigure munge)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SingleNodeSlurm:
    """munged, slurmctld and slurmd for this host and its CPUs, in `root`.

    Args:
        root: An empty directory for everything the cluster writes.
        cpus: CPUs the node offers (default: this machine's); more than it has lets that many 1-CPU jobs
            run at once (``SlurmdParameters=config_overrides``), for jobs that mostly wait.
    """

    def __init__(self, root: Path, cpus: int | None = None) -> None:
        self.root = Path(root)
        self.host = socket.gethostname().split(".")[0]
        self.cpus = cpus or os.cpu_count() or 1
        self.conf = self.root / "slurm.conf"
        self.procs: list[subprocess.Popen] = []
        self.mdir: Path | None = None
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}

    def log(self, name: str, lines: int = 30) -> str:
        path = self.root / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else f"(no {path})"

    def start(self, timeout: float = 60) -> None:
        """Write the config, start the daemons, wait until ``sinfo`` shows the node idle.

        Raises:
            RuntimeError: A daemon did not come up in time; the message holds the ends of their logs.
        """
        munge = pwd.getpwnam("munge")
        # munged wants its socket's every parent directory open to all (x) and none writable by others:
        # pytest's temporary directories are 0700, so its own directory under /tmp, owned by munge
        mdir = self.mdir = Path(tempfile.mkdtemp(prefix="rigor-munge-"))
        mdir.chmod(0o711)
        key = mdir / "munge.key"
        shutil.copy("/etc/munge/munge.key", key)
        for path in (mdir, key):
            os.chown(path, munge.pw_uid, munge.pw_gid)
        key.chmod(0o400)
        socket_path = mdir / "munge.socket"
        for name in ("state", "spool"):
            (self.root / name).mkdir()
        ctld_port, d_port = free_port(), free_port()
        self.conf.write_text(f"""\
ClusterName=rigortest
SlurmctldHost={self.host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# a requeued job may start again only after cred_expire (120 s by default): 5 s here
AuthInfo=socket={socket_path},cred_expire=5
CredType=cred/munge
StateSaveLocation={self.root / 'state'}
SlurmdSpoolDir={self.root / 'spool'}
SlurmctldPidFile={self.root / 'slurmctld.pid'}
SlurmdPidFile={self.root / 'slurmd.pid'}
SlurmctldLogFile={self.root / 'slurmctld.log'}
SlurmdLogFile={self.root / 'slurmd.log'}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
ReturnToService=2
SlurmdParameters=config_overrides
KillWait=10
# pending jobs (a requeued one past its begin time) are looked at every 2 s, not 60
SchedulerParameters=sched_interval=2
InactiveLimit=0
NodeName={self.host} NodeAddr=127.0.0.1 CPUs={self.cpus} State=UNKNOWN
PartitionName=debug Nodes={self.host} Default=YES MaxTime=INFINITE State=UP
""")
        self._spawn(["munged", "--foreground", f"--socket={socket_path}",
                     f"--key-file={key}", f"--pid-file={mdir / 'munged.pid'}", f"--log-file={mdir / 'munged.log'}",
                     f"--seed-file={mdir / 'munged.seed'}"], "munged.out", user=munge)
        self._wait(lambda: socket_path.exists(), 10, "munged")
        self._spawn(["slurmctld", "-D", "-i", "-f", str(self.conf)], "slurmctld.out")
        self._wait(lambda: self._run(["scontrol", "ping"]).returncode == 0, timeout, "slurmctld")
        self._spawn(["slurmd", "-D", "-f", str(self.conf), "-N", self.host], "slurmd.out")
        self._wait(lambda: self._run(["sinfo", "-h", "-o", "%t"]).stdout.strip() == "idle", timeout, "slurmd")

    def _run(self, cmd: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=30)

    def _spawn(self, cmd: list[str], out: str, user: pwd.struct_passwd | None = None) -> None:
        as_user = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []} if user else {}
        with open(self.root / out, "w") as f:
            self.procs.append(subprocess.Popen(cmd, env=self.env, stdout=f, stderr=subprocess.STDOUT,
                                               start_new_session=True, **as_user))

    def _wait(self, ready, timeout: float, what: str) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if ready():
                return
            if any(p.poll() is not None for p in self.procs):
                break
            time.sleep(0.3)
        logs = "\n".join(f"--- {n}:\n{self.log(n)}" for n in ("slurmctld", "slurmd", "slurmctld.out", "slurmd.out"))
        self.stop()
        raise RuntimeError(f"{what} did not come up within {timeout:.0f} s:\n{logs}")

    def stop(self) -> None:
        """Cancel every job and wait for them to end, then end the daemons (slurmd, slurmctld, munged), by their pids."""
        if len(self.procs) == 3 and all(p.poll() is None for p in self.procs):
            self._run(["scancel", "--full", f"--user={pwd.getpwuid(os.getuid()).pw_name}"])
            end = time.monotonic() + 30
            while time.monotonic() < end and self._run(["squeue", "--noheader", "--states=RUNNING,COMPLETING"]).stdout.strip():
                time.sleep(0.5)
        for proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(5)
        self.procs = []
        if self.mdir is not None:
            shutil.rmtree(self.mdir, ignore_errors=True)
            self.mdir = None
