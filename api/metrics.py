"""Prometheus metrics computed from the database at scrape time (no in-process counters to lose)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from kdservice.budget import DiskBudget
from kdservice.states import JOB_STATES, TERMINAL_STATES
from kdservice.tables import Job

DURATION_BUCKETS = (10, 30, 60, 300, 600, 1800, 3600, 7200, 14400, 28800, 86400)


class JobCollector(Collector):
    def __init__(self, sessions: sessionmaker[Session]):
        self.sessions = sessions

    def collect(self) -> Iterator[Metric]:
        with self.sessions() as session:
            counts = dict(session.execute(select(Job.state, func.count()).group_by(Job.state)).all())
            finished = session.execute(
                select(Job.state, Job.started_at, Job.finished_at)
                .where(Job.state.in_(TERMINAL_STATES), Job.started_at.is_not(None),
                       Job.finished_at.is_not(None))
            ).all()
        jobs = GaugeMetricFamily("kd_jobs", "Jobs by state", labels=["state"])
        for state in JOB_STATES:
            jobs.add_metric([state], counts.get(state, 0))
        yield jobs
        yield GaugeMetricFamily("kd_queue_depth", "Jobs waiting for a worker (state queued)",
                                value=counts.get("queued", 0))
        durations: dict[str, list[float]] = {state: [] for state in TERMINAL_STATES}
        for state, started, ended in finished:
            durations[state].append(max((ended - started).total_seconds(), 0.0))
        histogram = HistogramMetricFamily("kd_job_duration_seconds", "Run time of finished jobs ",
                                          labels=["state"])
        for state, values in durations.items():
            buckets = [(str(float(b)), sum(v <= b for v in values)) for b in DURATION_BUCKETS]
            buckets.append(("+Inf", len(values)))
            histogram.add_metric([state], buckets, sum_value=sum(values))
        yield histogram


class UploadBudgetCollector(Collector):
    """This process's upload disk budget (kdservice.budget): per API replica, unlike the job metrics."""

    def __init__(self, budget: DiskBudget):
        self.budget = budget

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("kd_upload_disk_bytes_in_use", "Bytes of the upload disk budget held by uploads "
                                "in progress in this API process", value=self.budget.in_use)
        yield GaugeMetricFamily("kd_upload_disk_bytes_budget", "KD_UPLOAD_DISK_BUDGET_BYTES",
                                value=self.budget.total)
