"""Print the sbatch calls the SLURM plugin would make for every job of a Snakemake run, submitting
nothing: one JSON line per sbatch call, {"rule", "jobs", "sbatch"}. Run with the submit venv's
Python and Snakemake's own arguments:

    .venv-slurm/bin/python tests/render_sbatch.py --profile profiles/slurm [...] -- TARGET

Snakemake parses the profile and builds the DAG as for a real run. When the scheduler hands the
plugin its first ready jobs, every job of the DAG goes through the plugin's own run_job (or
run_array_jobs for the rules in --slurm-array-jobs), with the plugin's subprocess.Popen replaced by
a recorder that answers like sbatch --parsable; then the process exits. Account validation
(sacctmgr) is skipped: no cluster is asked anything.
"""

import json
import os
import sys
from itertools import count

import snakemake_executor_plugin_slurm as slurm
from snakemake.cli import main

CALLS: list[str] = []
JOB_IDS = count(1)


class RecordedSbatch:
    """Answers like sbatch --parsable with a new job id."""

    returncode = 0

    def communicate(self, input=None):
        return f"{next(JOB_IDS)}\n", ""


def recording_popen(popen):
    """subprocess.Popen for the plugin while it submits: sbatch calls are recorded, not run."""

    def open_(call, *args, **kwargs):
        if isinstance(call, str) and call.startswith("sbatch "):
            CALLS.append(call)
            return RecordedSbatch()
        return popen(call, *args, **kwargs)

    return open_


def describe(job) -> str:
    return " ".join([job.rule.name, *(f"{k}={v}" for k, v in job.wildcards_dict.items())])


def render(self, ready_jobs) -> None:
    dag = self.workflow.dag
    jobs = [j for j in dag.needrun_jobs() if not j.is_local]
    by_rule: dict[str, list] = {}
    for job in jobs:
        by_rule.setdefault(job.rule.name, []).append(job)
    for rule, same in by_rule.items():
        batches = [same] if rule in self.array_jobs and len(same) > 1 else [[j] for j in same]
        for batch in batches:
            start = len(CALLS)
            popen = slurm.subprocess.Popen
            slurm.subprocess.Popen = recording_popen(popen)
            try:
                if len(batch) > 1:
                    self.run_array_jobs(batch)
                else:
                    self.run_job(batch[0])
            finally:
                slurm.subprocess.Popen = popen
            for call in CALLS[start:]:
                print(json.dumps({"rule": rule, "jobs": sorted(describe(j) for j in batch), "sbatch": call}))
    sys.stdout.flush()
    os._exit(0)


slurm.validate_account = lambda account, logger: account
slurm.Executor.run_jobs = render
main(["--nolock", *sys.argv[1:]])
