"""fedcore.runtime: the thread and process runners of every registered method, the one job
(``fedcore run``), ``fedcore serve`` / ``fedcore join`` across hosts, metrics and plots. It knows
methods only through ``fedcore.algorithms``' registry."""

from .job import load_job_config, resume_point, run_job
from .runner import RunOutcome, run, run_processes, run_threads

__all__ = ["RunOutcome", "load_job_config", "resume_point", "run", "run_job", "run_processes", "run_threads"]
