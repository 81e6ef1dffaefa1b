"""Celery workers that start warm: storesync and its quality gate loaded once per worker, before
Celery forks its pool, as ``StoresyncLocalExecutor`` does for the LocalExecutor.

    AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS=storesync.provider.celery_config.CELERY_CONFIG

Why: an Airflow 3.3 Celery worker runs each task in a process forked (no exec) from a pool
process that Celery forked from the worker, so a task has whatever the worker had imported. This
module is the worker's Celery configuration: Airflow's own default, unchanged (the same object),
plus a ``worker_init`` handler that runs :func:`~storesync.provider.executors.warm_task_processes`
in the worker's main process before the pool starts. A failure to warm is logged and the worker
starts anyway (the tasks then build what they need themselves).
"""

from __future__ import annotations

import logging

from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG
from celery.signals import worker_init

log = logging.getLogger(__name__)

CELERY_CONFIG = DEFAULT_CELERY_CONFIG  # Airflow's own: this module only adds the warm start


@worker_init.connect
def warm_before_the_pool_forks(**_) -> None:
    import gc

    from storesync.provider.executors import warm_logged

    if warm_logged("celery worker") is not None:
        # As Airflow does for what it imports itself (unfrozen again once the pool is up): the
        # pool processes' collections then leave these objects' pages shared, not copied.
        gc.freeze()
