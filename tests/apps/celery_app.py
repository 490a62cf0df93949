"""A shop with Celery delivery, configured by env vars: the web side and the worker side."""

from __future__ import annotations

import os

from celery import Celery
from flask import Flask

from flask_neuroon import Neuroon
from flask_neuroon.contrib.celery import register_tasks

neuroon = Neuroon()


def create_app() -> Flask:
    app = Flask(__name__, instance_path=os.environ["SHOP_INSTANCE"])
    app.config.update(
        NEUROON_SHOP_ID="shop_test",
        NEUROON_API_KEY=os.environ["SHOP_API_KEY"],
        NEUROON_ORIGIN="http://127.0.0.1",
        NEUROON_API_URL=os.environ["SHOP_API_URL"],
        NEUROON_STORAGE_URI=os.environ["SHOP_STORAGE_URI"],
        NEUROON_DISPATCH="celery",
        NEUROON_RETRY_SCHEDULE=(0.5,),
    )
    neuroon.init_app(app)
    celery_app = Celery(
        "shop",
        broker=os.environ["SHOP_BROKER_URL"],
        set_as_current=False,
    )
    celery_app.conf.update(
        task_ignore_result=True,
        broker_connection_retry_on_startup=True,
        beat_schedule_filename=os.path.join(os.environ["SHOP_INSTANCE"], "celerybeat-schedule"),
        worker_hijack_root_logger=False,
        task_default_queue=os.environ.get("SHOP_CELERY_QUEUE", "celery"),
    )
    app.extensions["celery"] = celery_app
    register_tasks(
        celery_app, flask_app=app, flush_every=float(os.environ.get("SHOP_FLUSH_EVERY", "1"))
    )
    return app


if "SHOP_INSTANCE" in os.environ:
    flask_app = create_app()
    celery_app: Celery = flask_app.extensions["celery"]
