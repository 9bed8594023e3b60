"""The Celery app of the production layout (the embedded default runs its work in-process instead).

Broker: Redis (``REDIS_URL``). The rows are the queue (a Read is its own job), so a message is only a
wake-up; still, a lost one costs latency, so delivery is made as prompt as Redis allows:

* ``task_acks_late`` + ``task_reject_on_worker_lost``: a message is acknowledged after its task ran,
  and one whose worker died is put back, not dropped;
* a short ``visibility_timeout`` with kombu's ``unacked_restore_interval`` and
  ``unacked_restore_throttle`` set explicitly: kombu's defaults restore a dead worker's messages only
  after an hour's visibility timeout and a sweep every 10 x 10 s;
* ``worker_prefetch_multiplier = 1``: a worker holds one message at a time, so a killed worker strands
  at most one wake-up.

Queues: ``inference`` (the model; its worker runs ``--pool solo`` so it never forks after CUDA is
initialised: ``manage.py inference_worker``) and ``default`` (the reconciler and light work). The
reconciler (``inference.tasks.reads_reconcile``) runs every ``READ_RECONCILE_SECONDS`` from beat.
"""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "xcaliber.settings")

app = Celery("xcaliber")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["inference", "referrals"])
