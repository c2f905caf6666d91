"""The simulator's own batch scheduler: job classes, the queue, and its recorded history.

``scheduler:`` in a sim config (see ``config/sim_presets/ai.yaml``) lists job classes
(:class:`JobClass`: cpu batch, gpu-train, gpu-infer services, io) arriving as Poisson
processes; :class:`BatchScheduler` queues them FIFO with backfill, starts them on free hosts,
announces expected starts from what it knows, and writes a
:class:`~rackpower_nodes.core.workload_events.JobLog` (:meth:`BatchScheduler.job_log`).
"""
from rackpower_nodes.sim.scheduler.classes import (
    JOB_KINDS,
    InferenceSpec,
    JobClass,
    SchedulerConfig,
    TrainingSpec,
    parse_scheduler,
)
from rackpower_nodes.sim.scheduler.queue import BatchScheduler, Job

__all__ = ["JOB_KINDS", "BatchScheduler", "InferenceSpec", "Job", "JobClass",
           "SchedulerConfig", "TrainingSpec", "parse_scheduler"]
