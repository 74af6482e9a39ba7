"""SIGKILL a worker at random moments of a small job; count what survives. Prints JSON.

Each trial submits a small job (digits, resnet20 -> resnet8, teacher + baseline + distillation, ONNX
export), waits
until the job reaches a randomly chosen moment (training: one of the three training phases, then up
to 2 s more; evaluating or exporting, then up to 0.2 s more), SIGKILLs the worker's whole process group (parent and
training child at once) and starts a new worker, which finds the job through the sweeper (lease expiry)
and resumes it. Counted over the trials:

- `succeeded`: jobs that ended succeeded;
- `completed_twice`: jobs with more than one `succeeded` transition (a run finished twice);
- `phases_retrained`: training phases finished before the kill (in phases.json) that wrote epoch
  metrics again after it (a finished phase trained again);
- `epochs_repeated`: (phase, epoch) rows written twice: an epoch killed after its metrics row and
  before its checkpoint, trained again on resume (expected occasionally; not a duplicate run);
- `missed`: trials where the job ended before the chosen moment came.

    python bench/chaos.py [--trials 20] [--backend embedded|redis-postgres] [--seed 0]

`redis-postgres` needs KD_TEST_REDIS_URL and KD_TEST_POSTGRES_URL (scripts/ci-services.sh starts both);
the run uses its own PostgreSQL schema (dropped afterwards) and Redis database 13.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
from sqlalchemy import create_engine, select, text  # noqa: E402

from kdcore.pipeline import TRAIN_PHASES  # noqa: E402
from kdservice.db import make_engine, make_sessionmaker, upgrade_database  # noqa: E402
from kdservice.security import create_api_key  # noqa: E402
from kdservice.settings import Settings  # noqa: E402
from kdservice.tables import Job, JobMetric, JobTransition, Worker, utcnow  # noqa: E402
from scripts.serve import api_command  # noqa: E402

# Each training phase lasts a few seconds on one CPU thread, so a kill can land inside it.
SPEC = {
    "name": "chaos", "dataset": {"source": "digits", "subset": 1200, "test_subset": 100},
    "teacher": {"arch": "resnet20", "reuse": False, "train": {"epochs": 6, "batch_size": 64, "lr": 0.1}},
    "student": {"arch": "resnet8"}, "distill": {"method": "kd"},
    "train": {"epochs": 6, "batch_size": 64, "lr": 0.1}, "baseline": True,
    "evaluate": {"corruptions": ["gaussian_noise", "contrast"], "severities": [1, 3], "max_images": 100,
                 "latency": False},
    "export": ["safetensors", "onnx"],
}
MOMENTS = ["training", "evaluating", "exporting"]
LEASE_SECONDS = 3
CHAOS_REDIS_DB = 13
JOB_TIMEOUT_S = 600


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Rig:
    """The API and one worker at a time, on a temp artifact dir and the chosen database and broker."""

    def __init__(self, var_dir: Path, database_url: str, broker_url: str):
        self.var_dir = var_dir
        self.env = {**os.environ, "KD_ARTIFACT_DIR": str(var_dir), "KD_DATABASE_URL": database_url,
                    "KD_BROKER_URL": broker_url, "KD_LEASE_SECONDS": str(LEASE_SECONDS), "KD_LOG_LEVEL": "warning",
                    "OMP_NUM_THREADS": "1"}
        self.settings = Settings(artifact_dir=var_dir, database_url=database_url, broker_url=broker_url,
                                 host="127.0.0.1", port=_free_port())
        upgrade_database(database_url)
        self.sessions = make_sessionmaker(make_engine(database_url))
        with self.sessions.begin() as session:
            _, key = create_api_key(session, "chaos")
        self.api = self._start([sys.executable, *api_command(self.settings)], "api.log")
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.settings.port}", timeout=30,
                                 headers={"Authorization": f"Bearer {key}"})
        self._wait(lambda: self._healthy(), 60, "the API")
        self.worker: subprocess.Popen | None = None
        self.workers_started = 0

    def _start(self, args: list[str], log_name: str) -> subprocess.Popen:
        log = (self.var_dir / log_name).open("ab")
        return subprocess.Popen(args, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)

    def _healthy(self) -> bool:
        try:
            return self.http.get("/healthz").status_code == 200
        except httpx.TransportError:
            return False

    @staticmethod
    def _wait(predicate, timeout: float, what: str, interval: float = 0.05):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if value := predicate():
                return value
            time.sleep(interval)
        raise RuntimeError(f"timed out waiting for {what}")

    def start_worker(self) -> None:
        self.workers_started += 1
        name = f"chaos{self.workers_started}"
        since = utcnow()
        self.worker = self._start([sys.executable, "-m", "worker", "-n", f"{name}@%h"], f"worker-{name}.log")

        def ready() -> bool:
            with self.sessions() as session:
                return session.scalar(select(Worker.id).where(Worker.id.startswith(name + "@"),
                                                              Worker.last_seen_at >= since)) is not None
        self._wait(ready, 120, f"worker {name}", 0.2)

    def kill_worker(self) -> None:
        os.killpg(self.worker.pid, signal.SIGKILL)
        self.worker.wait(10)

    def stop(self) -> None:
        for proc in (self.worker, self.api):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
        self.http.close()

    def job_row(self, job_id: str) -> tuple[str, str | None]:
        with self.sessions() as session:
            return session.execute(select(Job.state, Job.phase).where(Job.id == job_id)).one()

    def metric_rows(self, job_id: str) -> list[tuple[str, int, object]]:
        with self.sessions() as session:
            return [tuple(r) for r in session.execute(
                select(JobMetric.phase, JobMetric.epoch, JobMetric.at).where(JobMetric.job_id == job_id))]

    def transitions(self, job_id: str) -> list[str]:
        with self.sessions() as session:
            return list(session.scalars(select(JobTransition.state).where(JobTransition.job_id == job_id)
                                        .order_by(JobTransition.id)))


def trial(rig: Rig, rng: random.Random) -> dict:
    moment = rng.choice(MOMENTS)
    target = rng.choice(list(TRAIN_PHASES.values())) if moment == "training" else moment
    # Training phases last seconds, evaluating and exporting about one: a shorter random wait for those.
    delay = rng.uniform(0, 2.0) if moment == "training" else rng.uniform(0, 0.2)
    job_id = rig.http.post("/v1/jobs", json=SPEC).json()["id"]

    def reached() -> str | None:
        state, phase = rig.job_row(job_id)
        return "done" if state in ("succeeded", "failed", "cancelled") else ("yes" if phase == target else None)

    outcome = rig._wait(reached, JOB_TIMEOUT_S, f"phase {target}", 0.05)
    killed_in = None
    if outcome == "yes":
        time.sleep(delay)
        state, phase = rig.job_row(job_id)
        if state not in ("succeeded", "failed", "cancelled"):
            phases_file = rig.var_dir / "jobs" / job_id / "phases.json"
            # phases.json keys: "teacher", or "seed-<seed>/<student>" (kdcore.job_files.phase_key)
            keys = json.loads(phases_file.read_text()) if phases_file.exists() else []
            finished = [TRAIN_PHASES[key.rsplit("/", 1)[-1]] for key in keys]
            rig.kill_worker()
            killed_at, killed_in = utcnow(), phase
            rig.start_worker()
    state = rig._wait(lambda: (s := rig.job_row(job_id)[0]) in ("succeeded", "failed", "cancelled") and s,
                      JOB_TIMEOUT_S, "the job to finish", 0.3)
    transitions = rig.transitions(job_id)
    metrics = rig.metric_rows(job_id)
    per_epoch = Counter((phase, epoch) for phase, epoch, _ in metrics)
    retrained = []
    if killed_in is not None:
        retrained = sorted({p for p, _, at in metrics if p in finished and at > killed_at})
    return {"job": job_id, "target": target, "killed_in": killed_in, "state": state,
            "succeeded_transitions": transitions.count("succeeded"), "phases_retrained": retrained,
            "epochs_repeated": sorted(f"{p}:{e}" for (p, e), n in per_epoch.items() if n > 1),
            "transitions": transitions}


def backend_urls(backend: str, var_dir: Path) -> tuple[str, str, str | None]:
    if backend == "embedded":
        return f"sqlite:///{var_dir}/kd.db", "filesystem://", None
    redis_url, pg_url = os.environ.get("KD_TEST_REDIS_URL"), os.environ.get("KD_TEST_POSTGRES_URL")
    if not (redis_url and pg_url):
        raise SystemExit("redis-postgres needs KD_TEST_REDIS_URL and KD_TEST_POSTGRES_URL (scripts/ci-services.sh)")
    # A Redis database of its own: the tests use the same server, and a worker of theirs must not take
    # (and drop, as not claimable) a message of ours, nor ours theirs.
    redis_url = redis_url.rsplit("/", 1)[0] + f"/{CHAOS_REDIS_DB}"
    schema = f"kd_chaos_{uuid.uuid4().hex[:10]}"
    with create_engine(pg_url).begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in pg_url else "?"
    return f"{pg_url}{sep}options=-csearch_path%3D{schema}", redis_url, schema


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--backend", choices=["embedded", "redis-postgres"], default="embedded")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="kd-chaos-") as tmp:
        database_url, broker_url, schema = backend_urls(args.backend, Path(tmp))
        if args.backend == "redis-postgres":
            from kdservice.queue import producer

            producer(Settings(artifact_dir=Path(tmp), database_url=database_url, broker_url=broker_url)).control.purge()
        rig = Rig(Path(tmp), database_url, broker_url)
        started = time.perf_counter()
        trials = []
        try:
            rig.start_worker()
            for i in range(args.trials):
                row = trial(rig, rng)
                print(json.dumps({"trial": i, **row}), flush=True)
                trials.append(row)
        finally:
            rig.stop()
            if schema:
                with create_engine(os.environ["KD_TEST_POSTGRES_URL"]).begin() as connection:
                    connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        killed = [t for t in trials if t["killed_in"]]
        print(json.dumps({
            "backend": args.backend, "trials": len(trials), "killed": len(killed),
            "missed": len(trials) - len(killed),
            "killed_in": dict(Counter(t["killed_in"] for t in killed)),
            "succeeded": sum(t["state"] == "succeeded" for t in trials),
            "completed_twice": sum(t["succeeded_transitions"] > 1 for t in trials),
            "phases_retrained": sum(len(t["phases_retrained"]) for t in trials),
            "epochs_repeated": sum(len(t["epochs_repeated"]) for t in trials),
            "seconds": round(time.perf_counter() - started, 1),
            "load_average": os.getloadavg(),
        }, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
