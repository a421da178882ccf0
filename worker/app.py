"""The Celery application: ``celery -A worker.app worker -Q batch-control,dial,status,webhooks``."""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import worker_process_init

from shared.db import reset_engine
from shared.messaging import make_celery

app = make_celery()
app.conf.imports = ("worker.tasks",)


@worker_process_init.connect
def _fresh_database_pool(**_: Any) -> None:
    # A forked pool child must not share the parent's database connections.
    reset_engine(close=False)


logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
