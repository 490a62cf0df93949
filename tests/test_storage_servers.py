"""The storage contract on SQL servers through SQLAlchemy: PostgreSQL, MariaDB, and SQLite
through SQLAlchemy (the conditional-update claim path)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from flask_neuroon import ConfigurationError, StorageError
from flask_neuroon.storage import Storage, storage_from_uri

from .conftest import need_service
from .services import MARIADB_URL, POSTGRES_URL, importable, port_open
from .test_storage_contract import NOW, StorageContract


def sql_storage(url: str, name: str, driver: str, port: int) -> Iterator[Storage]:
    need_service(
        name,
        importable(driver) and port_open("127.0.0.1", port),
        f"{url.split('@')[-1]} with the {driver} driver",
    )
    from flask_neuroon.storage.sqlalchemy import SQLAlchemyStorage, metadata

    storage = storage_from_uri(url)
    assert isinstance(storage, SQLAlchemyStorage)
    metadata.create_all(storage.engine)
    with storage.engine.begin() as connection:
        for table in metadata.sorted_tables:
            connection.execute(table.delete())
    yield storage
    storage.close()


class TestPostgreSQLStorage(StorageContract):
    @pytest.fixture
    def storage(self) -> Iterator[Storage]:
        yield from sql_storage(POSTGRES_URL, "PostgreSQL", "psycopg", 5432)


class TestMariaDBStorage(StorageContract):
    @pytest.fixture
    def storage(self) -> Iterator[Storage]:
        yield from sql_storage(MARIADB_URL, "MariaDB", "pymysql", 3306)

    def test_order_ids_differing_in_case_are_different_orders(self, storage: Storage):
        assert storage.add("ord-a", "{}", NOW) is True
        assert storage.add("ORD-A", "{}", NOW) is True


class TestSQLiteThroughSQLAlchemy(StorageContract):
    @pytest.fixture
    def storage(self, tmp_path: Path) -> Iterator[Storage]:
        need_service(
            "SQLAlchemy", importable("sqlalchemy"), "pip install flask-neuroon[sqlalchemy]"
        )
        from flask_neuroon.storage.sqlalchemy import SQLAlchemyStorage

        storage = SQLAlchemyStorage.from_uri(f"sqlite+pysqlite:///{tmp_path}/sa.db")
        yield storage
        storage.close()


def test_unreachable_database_fails_fast_with_a_storage_error():
    need_service("SQLAlchemy", importable("psycopg"), "the postgresql extra")
    storage = storage_from_uri("postgresql+psycopg://neuroon:s3cret@127.0.0.1:1/nowhere")
    with pytest.raises(StorageError) as caught:
        storage.add("o", "{}", NOW)
    assert "s3cret" not in str(caught.value)
    assert "s3cret" not in repr(storage)
    assert "***" in repr(storage)


@pytest.mark.parametrize(
    "uri",
    [
        "postgresql+psycopg://neuroon@127.0.0.1:1/nowhere?password=s3cret",
        "postgresql+psycopg:///nowhere?host=127.0.0.1&port=1&password=s3cret",
        "postgresql+psycopg://neuroon@127.0.0.1:1/nowhere?sslpassword=s3cret&connect_timeout=1",
        "mysql+pymysql://neuroon@127.0.0.1:1/nowhere?passwd=s3cret",
    ],
)
def test_a_password_given_as_a_query_option_is_hidden_too(uri: str, tmp_path: Path, caplog):
    need_service("SQLAlchemy drivers", importable("psycopg") and importable("pymysql"))
    from flask import Flask

    from flask_neuroon import Neuroon

    from .conftest import base_config

    app = Flask("pw", instance_path=str(tmp_path))
    app.config.update(base_config(None, tmp_path, NEUROON_STORAGE_URI=uri))
    Neuroon(app)
    state = app.extensions["neuroon"]
    with pytest.raises(StorageError) as caught:
        state.storage.add("o", "{}", NOW)
    result = app.test_cli_runner().invoke(args=["neuroon", "check"])
    shown = [
        repr(state),
        repr(state.settings),
        repr(state.storage),
        str(caught.value),
        result.output,
    ]
    assert "***" in state.storage.display_uri
    assert not [text for text in shown if "s3cret" in text]


def test_unknown_sql_driver_is_a_configuration_error():
    need_service("SQLAlchemy", importable("sqlalchemy"), "the sqlalchemy extra")
    with pytest.raises(ConfigurationError, match="not a usable SQLAlchemy URL"):
        storage_from_uri("mssql+nonexistentdriver://x@y/z")


def test_a_missing_driver_names_the_extra_to_install():
    need_service("SQLAlchemy", importable("sqlalchemy"), "the sqlalchemy extra")
    with pytest.raises(ConfigurationError, match=r"pip install 'flask-neuroon\[mysql\]'"):
        storage_from_uri("mysql+mysqldb://root@127.0.0.1/test")  # MySQLdb is not installed


def test_a_uri_without_a_driver_names_the_one_the_extra_installs():
    # mysql:// asks SQLAlchemy for MySQLdb; installing the [mysql] extra again cannot help.
    need_service("SQLAlchemy", importable("sqlalchemy"), "the sqlalchemy extra")
    if importable("MySQLdb"):
        pytest.skip("MySQLdb is installed here: mysql:// works")
    with pytest.raises(ConfigurationError) as caught:
        storage_from_uri("mysql://root@127.0.0.1/test")
    assert "write mysql+pymysql://" in str(caught.value)
