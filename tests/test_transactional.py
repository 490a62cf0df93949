"""The shop's own database: engine reuse (Flask-SQLAlchemy) and the transactional outbox."""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from flask_neuroon import Neuroon, Order, OrderLine
from flask_neuroon.testing import FakeNeuroonAPI

from .conftest import base_config, need_service
from .services import POSTGRES_URL, importable, port_open


def order(order_id: str) -> Order:
    return Order(
        id=order_id,
        total=Decimal("20.00"),
        currency="EUR",
        lines=[OrderLine(product_id="P1", quantity=2, unit_price=Decimal("10.00"))],
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    need_service("Flask-SQLAlchemy", importable("flask_sqlalchemy"), "pip install flask-sqlalchemy")
    if request.param == "postgresql":
        need_service("PostgreSQL", importable("psycopg") and port_open("127.0.0.1", 5432))
        return POSTGRES_URL
    return f"sqlite:///{tmp_path}/shop.db"


@pytest.fixture
def shop(
    api: FakeNeuroonAPI, tmp_path: Path, database_url: str
) -> Iterator[tuple[Flask, Neuroon, Any]]:
    """A shop on Flask-SQLAlchemy whose orders table and neuroon's tables share one database."""
    from flask_sqlalchemy import SQLAlchemy

    from flask_neuroon.storage.sqlalchemy import metadata

    db = SQLAlchemy()

    class ShopOrder(db.Model):  # type: ignore[name-defined,misc]
        __tablename__ = "shop_orders_test"
        id = db.Column(db.String(40), primary_key=True)
        status = db.Column(db.String(20))

    app = Flask("sqla_shop", instance_path=str(tmp_path / "instance"))
    app.config.update(base_config(api, tmp_path, NEUROON_DISPATCH="thread"))
    app.config["SQLALCHEMY_DATABASE_URI"] = database_url
    db.init_app(app)
    neuroon = Neuroon()
    neuroon.init_app(app, engine=lambda: db.engine)
    with app.app_context():
        db.create_all()
        metadata.create_all(db.engine)
        for table in (*metadata.sorted_tables, ShopOrder.__table__):
            db.session.execute(table.delete())
        db.session.commit()
    app.extensions["test_db"] = (db, ShopOrder)
    yield app, neuroon, db
    with app.app_context():
        neuroon.shutdown()
        db.session.remove()
        ShopOrder.__table__.drop(db.engine)
        db.engine.dispose()


def test_the_outbox_lives_in_the_shops_own_database(shop, api):
    app, neuroon, db = shop
    with app.app_context():
        state = app.extensions["neuroon"]
        assert state.storage.engine is db.engine
        assert neuroon.track_conversion(order("ENG-1"), clicks={"P1": "s"}).wait(5) == "sent"
        row = db.session.execute(
            db.text("SELECT state, attempts FROM neuroon_outbox WHERE order_id = 'ENG-1'")
        ).one()
    assert tuple(row) == ("sent", 1)
    assert api.conversions[0].attributed_value == Decimal("20.00")


def test_committed_order_is_sent_after_the_commit(shop, api):
    app, neuroon, db = shop
    _, ShopOrder = app.extensions["test_db"]
    with app.test_request_context(headers={"Cookie": "neuroon_clicks=%7B%22P1%22%3A%22c%22%7D"}):
        neuroon.persist_before_gateway("TX-1")
    with app.app_context():
        db.session.add(ShopOrder(id="TX-1", status="paid"))
        delivery = neuroon.track_conversion(order("TX-1"), connection=db.session)
        time.sleep(0.3)
        assert api.requests == []  # nothing leaves before the shop commits
        assert delivery.status == "pending"
        db.session.commit()
        assert delivery.wait(5) == "sent"
    assert api.conversions[0].conversions[0]["searchLogId"] == "c"


def test_rolled_back_order_is_never_sent_and_keeps_its_snapshot(shop, api):
    app, neuroon, db = shop
    _, ShopOrder = app.extensions["test_db"]
    with app.test_request_context(headers={"Cookie": "neuroon_clicks=%7B%22P1%22%3A%22r%22%7D"}):
        neuroon.persist_before_gateway("TX-2")
    with app.app_context():
        db.session.add(ShopOrder(id="TX-2", status="paid"))
        delivery = neuroon.track_conversion(order("TX-2"), connection=db.session)
        db.session.rollback()
        assert delivery.wait(2) == "discarded"
        assert neuroon.flush(1) == 0
        assert app.extensions["neuroon"].storage.get("TX-2") is None
        # The shop tries again and commits: the snapshot is still there to attribute it.
        db.session.add(ShopOrder(id="TX-2", status="paid"))
        again = neuroon.track_conversion(order("TX-2"), connection=db.session)
        db.session.commit()
        assert again.wait(5) == "sent"
    assert api.received_count("TX-2") == 1
    assert api.conversions[0].conversions[0]["searchLogId"] == "r"


def test_core_connection_commit_and_rollback(shop, api):
    app, neuroon, db = shop
    with app.app_context():
        with db.engine.connect() as connection:
            with connection.begin():
                committed = neuroon.track_conversion(
                    order("CX-1"), clicks={}, connection=connection
                )
            with connection.begin() as transaction:
                discarded = neuroon.track_conversion(
                    order("CX-2"), clicks={}, connection=connection
                )
                transaction.rollback()
        assert committed.wait(5) == "sent"
        assert discarded.wait(1) == "discarded"
        neuroon.flush(2)
    assert api.received_count("CX-1") == 1
    assert api.received_count("CX-2") == 0


def test_duplicate_inside_the_transaction_does_not_break_it(shop, api):
    app, neuroon, db = shop
    _, ShopOrder = app.extensions["test_db"]
    with app.app_context():
        neuroon.track_conversion(order("TX-3"), clicks={}).wait(5)
        db.session.add(ShopOrder(id="TX-3", status="paid"))
        assert neuroon.track_conversion(order("TX-3"), connection=db.session).status == "duplicate"
        db.session.commit()  # the shop's transaction is intact
        assert db.session.get(ShopOrder, "TX-3") is not None
    assert api.received_count("TX-3") == 1


@pytest.mark.parametrize("outcome", ["commit", "rollback"])
def test_connection_to_another_database_queues_after_the_commit_only(
    api, make_app, caplog, outcome
):
    # The outbox (the SQLite default) is not in the shop's database, so the row cannot be
    # written in its transaction: it is queued once that commits, never after a rollback.
    need_service("SQLAlchemy", importable("sqlalchemy"))
    from sqlalchemy import create_engine, text
    from sqlalchemy.orm import Session

    app, neuroon = make_app(api, NEUROON_DISPATCH="sync")
    engine = create_engine("sqlite://")
    with app.app_context(), Session(engine) as session:
        session.execute(text("CREATE TABLE shop_orders (id TEXT)"))
        session.execute(text("INSERT INTO shop_orders VALUES ('ELSE-1')"))
        delivery = neuroon.track_conversion(order("ELSE-1"), clicks={}, connection=session)
        assert delivery.status == "pending" and api.requests == []
        session.commit() if outcome == "commit" else session.rollback()
    assert "connection= needs the outbox on SQLAlchemy storage" in caplog.text
    assert delivery.status == ("sent" if outcome == "commit" else "discarded")
    assert api.received_count("ELSE-1") == (1 if outcome == "commit" else 0)


@pytest.fixture
def bare_postgres_shop(api: FakeNeuroonAPI, tmp_path: Path) -> Iterator[tuple[Flask, Neuroon, Any]]:
    """A shop on a database of its own whose migrations have not created neuroon's tables
    yet (NEUROON_CREATE_TABLES = False): its outbox statements fail."""
    need_service("PostgreSQL", importable("psycopg") and port_open("127.0.0.1", 5432))
    from sqlalchemy import create_engine, text

    from .faults import private_database

    with private_database(POSTGRES_URL) as url:
        engine = create_engine(url)
        with engine.begin() as connection:
            connection.execute(text("CREATE TABLE shop_orders (id TEXT PRIMARY KEY)"))
        app = Flask("bare_shop", instance_path=str(tmp_path / "instance"))
        app.config.update(
            base_config(api, tmp_path, NEUROON_DISPATCH="sync", NEUROON_CREATE_TABLES=False)
        )
        neuroon = Neuroon()
        neuroon.init_app(app, engine=engine)
        yield app, neuroon, engine
        with app.app_context():
            neuroon.shutdown()
        engine.dispose()


@pytest.mark.parametrize("outcome", ["commit", "rollback"])
def test_an_outbox_statement_that_fails_leaves_the_shops_transaction_intact(
    bare_postgres_shop, api, caplog, outcome
):
    # On PostgreSQL a failed statement aborts the whole transaction: the shop's commit
    # then raised and its page was a 500, while the order had gone out directly anyway.
    from sqlalchemy import text
    from sqlalchemy.orm import Session

    app, neuroon, engine = bare_postgres_shop
    with app.app_context(), Session(engine) as session:
        session.execute(text("INSERT INTO shop_orders VALUES ('BARE-1')"))
        delivery = neuroon.track_conversion(order("BARE-1"), clicks={}, connection=session)
        assert api.requests == []  # nothing leaves before the shop commits
        session.commit() if outcome == "commit" else session.rollback()
    with engine.connect() as connection:
        stored = connection.execute(text("SELECT id FROM shop_orders")).scalars().all()
    assert "queueing order BARE-1 in the shop's transaction failed" in caplog.text
    if outcome == "commit":
        assert stored == ["BARE-1"]  # the shop's commit went through
        assert api.received_count("BARE-1") == 1  # then the order: no outbox, so directly
        assert delivery.status == "sent"
    else:
        assert stored == []
        assert api.received_count("BARE-1") == 0
        assert delivery.status == "discarded"


def test_a_session_on_another_postgres_database_queues_after_the_commit(api, tmp_path, caplog):
    # The outbox is SQLAlchemy storage, but in another database than the shop's session:
    # writing the row on the shop's connection would put it where no sender looks.
    need_service("PostgreSQL", importable("psycopg") and port_open("127.0.0.1", 5432))
    from sqlalchemy import create_engine, text
    from sqlalchemy.orm import Session

    from .faults import private_database

    with private_database(POSTGRES_URL) as shop_url, private_database(POSTGRES_URL) as ours:
        app = Flask("two_databases", instance_path=str(tmp_path / "instance"))
        app.config.update(
            base_config(api, tmp_path, NEUROON_DISPATCH="sync", NEUROON_STORAGE_URI=ours)
        )
        neuroon = Neuroon(app)
        engine = create_engine(shop_url)
        try:
            with app.app_context(), Session(engine) as session:
                session.execute(text("CREATE TABLE shop_orders (id TEXT)"))
                delivery = neuroon.track_conversion(order("TWO-1"), clicks={}, connection=session)
                assert api.requests == []
                session.commit()
                assert delivery.status == "sent"
                assert app.extensions["neuroon"].storage.get("TWO-1").state == "sent"
        finally:
            with app.app_context():
                neuroon.shutdown()
            engine.dispose()
    assert "the outbox is in postgresql+psycopg://" in caplog.text
    assert api.received_count("TWO-1") == 1


def test_wait_learns_of_a_transactional_order_sent_by_another_process(api, tmp_path):
    # The order is written in the shop's transaction; cron's flush (another app on the
    # same database) sends it before this worker's only sender is free. Its Delivery
    # says "sent" at once instead of waiting out its timeout.
    need_service("SQLAlchemy", importable("sqlalchemy"), "pip install -e '.[sqlalchemy]'")
    from sqlalchemy import create_engine

    engine = create_engine(f"sqlite:///{tmp_path}/shop.db")
    apps = []
    for name, dispatch in (("tx_worker", "thread"), ("tx_cron", "sync")):
        app = Flask(name, instance_path=str(tmp_path / name))
        app.config.update(
            base_config(api, tmp_path, NEUROON_DISPATCH=dispatch, NEUROON_MAX_WORKERS=1)
        )
        neuroon = Neuroon()
        neuroon.init_app(app, engine=engine)
        apps.append((app, neuroon))
    (worker, neuroon), (cron, cron_neuroon) = apps
    api.slow(1.5, times=1)  # holds the worker's only sender
    try:
        with worker.app_context():
            neuroon.track_conversion(order("TXW-HOLD"), clicks={})
            with engine.begin() as connection:
                delivery = neuroon.track_conversion(
                    order("TXW-1"), clicks={}, connection=connection
                )
        with cron.app_context():
            cron_neuroon.flush(5)
        started = time.perf_counter()
        assert delivery.wait(10) == "sent"
        assert time.perf_counter() - started < 3.0
        assert api.received_count("TXW-1") == 1
    finally:
        for app, each in apps:
            with app.app_context():
                each.shutdown()
        engine.dispose()
