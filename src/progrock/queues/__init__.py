"""Kinds that run on a task queue (Celery, ``django.tasks``) instead of the backend service.

* :mod:`~progrock.queues.targets`: what a ``PROGROCK["KINDS"]`` entry names (pure);
* :mod:`~progrock.queues.bridges`: a target's task, imported, with the keyword
  arguments it accepts and how to queue it (the queue's own code is in
  :mod:`progrock.celery` and :mod:`progrock.django_tasks`, each behind its extra);
* :mod:`~progrock.queues.start`: start one: a push task, then the queue's job.
"""
