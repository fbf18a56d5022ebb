"""Shared fixtures: real databases (SQLite and PostgreSQL), a real uvicorn, real clients."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import os
import random
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import httpx
import pytest
import uvicorn
from pydicom import Dataset, dcmread
from sqlalchemy import Engine, event
from sqlalchemy.engine import make_url
from sqlmodel import Session, select
from starlette.applications import Starlette

from archive.store import Archive
from ferry.app import build_archive, create_app
from ferry.database import migrate
from ferry.http_server import server_config
from ferry.settings import Settings
from foundation.database import create_database_engine
from policy.models import Institution, User
from tests import factories
from tests.policy._people import add_institution, add_user


def _share_httpx_default_ssl_context() -> None:
    """One SSL context with the default trust store for every httpx client of the test process.

    httpx builds a context for each client it makes (`httpx.get` makes one a call), loading the
    trust store's certificates each time: about 50 ms of CPU, and the tests make thousands of
    clients, nearly all of them for plain HTTP on loopback. A context built from the same trust
    store (certifi's, or the one SSL_CERT_FILE or SSL_CERT_DIR names) is the same whoever built
    it, and is safe to share between clients and threads; any other verify or cert setting
    still gets a context of its own."""
    from httpx._transports import default

    build = default.create_ssl_context

    @functools.cache
    def shared(trust_env: bool, store: tuple[str | None, str | None]) -> Any:
        return build(verify=True, cert=None, trust_env=trust_env)

    def create_ssl_context(verify: Any = True, cert: Any = None, trust_env: bool = True) -> Any:
        if verify is True and cert is None:
            store = (os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))
            return shared(trust_env, store)
        return build(verify=verify, cert=cert, trust_env=trust_env)

    default.create_ssl_context = create_ssl_context  # type: ignore[assignment]


_share_httpx_default_ssl_context()

REQUIRED = {item.strip() for item in os.environ.get("FERRY_TEST_REQUIRE", "").split(",") if item}


def skip_unless_available(kind: str, reason: str) -> None:
    """Skip on a laptop without the service; in CI (FERRY_TEST_REQUIRE) a skip is a failure."""
    if kind in REQUIRED:
        pytest.fail(f"{kind} is required here but unavailable: {reason}")
    pytest.skip(reason)


def _ephemeral_ports() -> range:
    """The kernel's range for outgoing connections, which a listener must stay out of."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return range(int(low), int(high) + 1)
    except (OSError, ValueError):
        return range(32768, 61000)


def _worker_share(ports: range) -> range:
    """This test process's own share of `ports` (every Nth, N the parallel processes), so
    that two processes of one run never pick the same port."""
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    index = int(worker) if worker.isdigit() else 0
    return ports[index % count :: count]


_EPHEMERAL = _ephemeral_ports()
_LISTENER_PORTS = _worker_share(
    range(20000, 32000) if _EPHEMERAL.start >= 32000 else range(61001, 65000)
)
_HANDED_OUT: set[int] = set()  # a test's servers ask for several ports before any binds


T = TypeVar("T")


def run_coroutine(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """`asyncio.run(main())` on a thread of its own: the process's Playwright (sync API) keeps an
    event loop running on the main thread once any browser test has started it."""
    outcome: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            outcome.append(asyncio.run(main()))
        except BaseException as error:  # handed to the caller's thread
            failure.append(error)

    thread = threading.Thread(target=run, name="test-coroutine")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return outcome[0]


def free_port() -> int:
    """A free port outside the ephemeral range.

    A port the kernel hands out (bind to 0) is free now but may be taken by any outgoing
    connection before the test's server binds it; one outside the range stays free. Never
    one this process handed out lately (a test's HTTP and DIMSE ports are both picked before
    either is bound), nor one of another parallel test process's share.
    """
    if len(_HANDED_OUT) > len(_LISTENER_PORTS) // 2:
        _HANDED_OUT.clear()  # the oldest tests' servers are long gone
    for _ in range(200):
        port = random.choice(_LISTENER_PORTS)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError("no free port for a test server")


@pytest.hookimpl(trylast=True)  # after pytest's own ordering (fewest fixture set-ups)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests marked `slow` (tens of seconds each: the crash, corpus, bridge, load and
    viewer walks) run first, in their order, then the rest in theirs: in a parallel run
    (`-n 2`) a long test that started last would keep one process busy while the others have
    nothing left to do."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


# A test that is about the password hashes themselves (their parameters, their cost, a
# sign-in verifying one at production cost) says so; every other test hashes cheaply.
production_passwords = pytest.mark.production_passwords

# argon2id at its smallest sensible cost: a millisecond a hash instead of a quarter of a second
# of CPU (and 64 MiB) with the production parameters.
_TEST_HASHER_PARAMETERS = {"time_cost": 1, "memory_cost": 1024, "parallelism": 1}


@pytest.fixture(scope="session", autouse=True)
def _passwords_hashed_cheaply() -> Iterator[None]:
    """In-process password hashing with argon2id at a test's cost, except in the tests marked
    `production_passwords` (see `_production_passwords`).

    Hundreds of tests sign people in to reach what they test; each sign-in verifies a hash, and
    with the production parameters that costs a quarter of a second of CPU. The code that hashes,
    verifies, rehashes on outdated parameters and costs the same for an unknown email is the
    production code either way: only `policy.passwords._hasher`'s parameters change, and the
    hashes stored for people are made with the same ones (tests/policy/_people.py), so no
    sign-in rehashes. A `ferry` subprocess hashes with the production parameters."""
    from argon2 import PasswordHasher

    from policy import passwords

    cheap = PasswordHasher(**_TEST_HASHER_PARAMETERS)
    production, decoy = passwords._hasher, passwords._decoy_hash

    def cheap_decoy() -> str:
        return cheap.hash("no account has this password")

    passwords._hasher = lambda: cheap  # type: ignore[assignment]
    passwords._decoy_hash = functools.cache(cheap_decoy)  # type: ignore[assignment]
    _PRODUCTION_HASHING[:] = [production, decoy]
    try:
        yield
    finally:
        passwords._hasher, passwords._decoy_hash = production, decoy  # type: ignore[assignment]


_PRODUCTION_HASHING: list[Any] = []


@pytest.fixture(autouse=True)
def _production_passwords(request: pytest.FixtureRequest) -> Iterator[None]:
    """The production argon2id parameters for a test marked `production_passwords`."""
    if request.node.get_closest_marker("production_passwords") is None:
        yield
        return
    from policy import passwords

    cheap = passwords._hasher, passwords._decoy_hash
    passwords._hasher, passwords._decoy_hash = _PRODUCTION_HASHING  # type: ignore[assignment]
    try:
        yield
    finally:
        passwords._hasher, passwords._decoy_hash = cheap  # type: ignore[assignment]


CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="session")
def playwright_session() -> Iterator[Any]:
    """One Playwright for the test process: its sync API keeps an event loop running on this
    thread, so a second one started while it lives fails. Every browser fixture launches from
    this one (Debian's /usr/bin/chromium; skipped without it unless FERRY_TEST_REQUIRE says
    `browser`)."""
    if not CHROMIUM.exists():
        skip_unless_available("browser", f"{CHROMIUM} is missing (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip_unless_available("browser", "Playwright is missing (pip install playwright)")
    with sync_playwright() as playwright:
        yield playwright


@pytest.fixture(scope="session", autouse=True)
def _metrics_files_removed() -> Iterator[None]:
    """The test process's metrics folder (see make_settings) goes with the process."""
    yield
    folder = Path(tempfile.gettempdir()) / f"ferry-test-metrics-{os.getpid()}"
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url() -> str:
    url = os.environ.get("FERRY_TEST_POSTGRES")
    if not url:
        skip_unless_available("postgres", "FERRY_TEST_POSTGRES is not set")
    return str(url)


# A test that needs one database only (it exercises a protocol, not storage) says so.
sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

# A test of the migrations themselves asks for a database they have never run on.
fresh_database = pytest.mark.fresh_database


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each test gets its own database: a SQLite file, or a PostgreSQL schema dropped after.

    It is already migrated (a copy of one the test process migrated once; see
    `_migrated_sqlite` and `_migrated_postgres`), so `build_archive`'s migration finds nothing
    to do; a test marked `fresh_database` gets an empty one instead."""
    fresh = request.node.get_closest_marker("fresh_database") is not None
    if request.param == "sqlite":
        if fresh:
            yield f"sqlite:///{tmp_path / 'index.db'}"
        else:
            yield request.getfixturevalue("sqlite_database_url")
        return
    base = request.getfixturevalue("postgres_url")
    migrated = None if fresh else request.getfixturevalue("_migrated_postgres")
    with postgres_schema(base, migrated) as url:
        yield url


@pytest.fixture
def sqlite_database_url(tmp_path: Path, _migrated_sqlite: Path) -> str:
    """A migrated SQLite database of the test's own, for a module whose `database_url` is
    SQLite only (pages, DIMSE traffic): a copy of `_migrated_sqlite`, not a fresh migration."""
    path = tmp_path / "index.db"
    shutil.copyfile(_migrated_sqlite, path)
    return f"sqlite:///{path}"


@pytest.fixture(scope="session")
def _migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated once a test process, copied for each test (a file copy takes
    milliseconds; running every migration takes most of a second)."""
    path = tmp_path_factory.mktemp("migrated") / "index.db"
    engine = create_database_engine(f"sqlite:///{path}")
    migrate(engine)
    with engine.connect() as connection:  # everything into the file itself, none left in -wal
        connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()
    return path


_SCHEMA_PLACEHOLDER = "ferry_migrated_schema_placeholder"


@pytest.fixture(scope="session")
def _migrated_postgres(postgres_url: str) -> str | None:
    """The SQL that recreates a migrated schema, with a placeholder for its name: a schema is
    migrated once a test process and dumped (pg_dump), and each test's schema is made by running
    the dump in one round trip, in about half the time the migrations take. None (each test
    migrates its own schema) if pg_dump is missing or cannot read this server."""
    import subprocess

    pg_dump = shutil.which("pg_dump")
    if pg_dump is None:
        return None
    plain = make_url(postgres_url).set(drivername="postgresql")
    with postgres_schema(postgres_url, None) as url:
        schema = str(make_url(url).query["options"]).split("search_path=")[1].split()[0]
        engine = create_database_engine(url)
        migrate(engine)
        engine.dispose()
        dbname = plain.render_as_string(hide_password=False)
        dumped = subprocess.run(
            [pg_dump, "--no-owner", "--no-privileges", "--inserts", "--schema", schema, dbname],
            capture_output=True,
            text=True,
        )
    if dumped.returncode != 0:
        return None
    # psql's own commands (\restrict ...) are for psql, not for the server.
    lines = [line for line in dumped.stdout.splitlines() if not line.startswith("\\")]
    return "\n".join(lines).replace(schema, _SCHEMA_PLACEHOLDER)


# Migrated schemas whose test is over, emptied and still as the migrations left them, for the
# next tests of this process: {(server, dump): [(schema, fingerprint), ...]}.
_SPARE_SCHEMAS: dict[tuple[str, str], list[tuple[str, str]]] = {}

# What a test could change in a schema besides its rows: relations, columns, defaults,
# constraints, triggers (and whether they are enabled), functions, enum values.
_FINGERPRINT = """
WITH n AS (SELECT oid FROM pg_namespace WHERE nspname = %s),
rels AS MATERIALIZED (
  SELECT c.oid, c.oid::text || c.relkind::text || c.relnatts::text || c.relfilenode::text
                || c.relrowsecurity::text AS shape
    FROM pg_class c WHERE c.relnamespace = (SELECT oid FROM n))
SELECT md5(concat_ws('|',
  (SELECT string_agg(shape, ',' ORDER BY oid) FROM rels),
  (SELECT md5(string_agg(a.attrelid::text || a.attname || a.atttypid::text || a.attnotnull::text
                         || a.attisdropped::text, ',' ORDER BY a.attrelid, a.attnum))
     FROM pg_attribute a WHERE a.attnum > 0 AND a.attrelid IN (SELECT oid FROM rels)),
  (SELECT string_agg(d.oid::text, ',' ORDER BY d.oid)
     FROM pg_attrdef d WHERE d.adrelid IN (SELECT oid FROM rels)),
  (SELECT string_agg(k.oid::text || k.convalidated::text, ',' ORDER BY k.oid)
     FROM pg_constraint k WHERE k.conrelid IN (SELECT oid FROM rels)),
  (SELECT string_agg(t.oid::text || t.tgenabled::text, ',' ORDER BY t.oid)
     FROM pg_trigger t WHERE t.tgrelid IN (SELECT oid FROM rels)),
  (SELECT string_agg(p.oid::text || md5(p.prosrc), ',' ORDER BY p.oid)
     FROM pg_proc p WHERE p.pronamespace = (SELECT oid FROM n)),
  (SELECT string_agg(e.oid::text, ',' ORDER BY e.oid)
     FROM pg_enum e JOIN pg_type y ON y.oid = e.enumtypid
     WHERE y.typnamespace = (SELECT oid FROM n))
))
"""


def _fingerprint(connection: Any, schema: str) -> str:
    return str(connection.execute(_FINGERPRINT, (schema,)).fetchone()[0])


def _emptied(connection: Any, schema: str, fingerprint: str, migrated: str) -> bool:
    """Empties a test's schema for the next test, as the dump made it (its seed rows, its
    sequences' values), if no one is connected to it any more and it is still as the migrations
    left it (some tests drop a table or a trigger); False, the schema untouched, otherwise."""
    import psycopg

    try:
        deadline = time.monotonic() + 1
        others = "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
        while connection.execute(others, (schema,)).fetchone()[0]:  # a closed one ends soon
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        if _fingerprint(connection, schema) != fingerprint:
            return False
        tables = connection.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,)
        ).fetchall()
        seeds = (
            line.replace(_SCHEMA_PLACEHOLDER, schema)
            for line in migrated.splitlines()
            if line.startswith(("INSERT INTO ", "SELECT pg_catalog.setval("))
        )
        statements = [
            "SET LOCAL lock_timeout = '5s'",
            "SET LOCAL session_replication_role = replica",  # no trigger: audit is append-only
            *(f"DELETE FROM {schema}.{table}" for (table,) in tables),
            *seeds,
        ]
        with connection.transaction():
            connection.execute(";\n".join(statements).encode())
    except psycopg.Error:
        return False
    return True


@pytest.fixture(scope="session", autouse=True)
def _spare_schemas_dropped() -> Iterator[None]:
    yield
    import psycopg

    for (plain, _), spare in _SPARE_SCHEMAS.items():
        with psycopg.connect(plain, autocommit=True) as connection:
            for schema, _ in spare:
                connection.execute(f"DROP SCHEMA {schema} CASCADE")
    _SPARE_SCHEMAS.clear()


def migrated_database(
    request: pytest.FixtureRequest, tmp_path: Path, stack: contextlib.ExitStack
) -> str:
    """The URL of a database already migrated, for a module's server on `request.param`
    ("sqlite" or "postgres"): a copy of the test process's migrated SQLite file, or a
    PostgreSQL schema made from its dump (dropped when `stack` closes)."""
    if request.param == "sqlite":
        path = tmp_path / "index.db"
        shutil.copyfile(request.getfixturevalue("_migrated_sqlite"), path)
        return f"sqlite:///{path}"
    migrated = request.getfixturevalue("_migrated_postgres")
    return stack.enter_context(postgres_schema(request.getfixturevalue("postgres_url"), migrated))


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    """A migrated engine on the test's database (SQLite, and PostgreSQL where it runs)."""
    built = create_database_engine(settings.database_url)
    migrate(built)
    yield built
    built.dispose()


@contextlib.contextmanager
def postgres_schema(base: str, migrated: str | None) -> Iterator[str]:
    """A schema of its own on the PostgreSQL server at `base`, made from `migrated` (see
    `_migrated_postgres`) if given, else empty; dropped afterwards. A migrated one is emptied
    instead, if it can be (see `_emptied`), and serves the process's next test (emptying
    takes a few hundredths of a second; making one and dropping it, a second or two).

    Its URL sets the search path to it and names it as the application, so that a connection
    still open on it is seen; commits do not wait for the server's disk: what a client sees is
    the same, only a crash of the database server itself could lose the last commits."""
    import psycopg

    plain = make_url(base).set(drivername="postgresql").render_as_string(hide_password=False)
    spare = _SPARE_SCHEMAS.setdefault((plain, migrated), []) if migrated is not None else []
    if spare:
        schema, fingerprint = spare.pop()
    else:
        schema, fingerprint = f"ferry_test_{secrets.token_hex(6)}", ""
        with psycopg.connect(plain, autocommit=True) as connection:
            connection.execute("SET synchronous_commit = off")
            if migrated is None:
                connection.execute(f"CREATE SCHEMA {schema}")
            else:
                connection.execute(migrated.replace(_SCHEMA_PLACEHOLDER, schema).encode())
                fingerprint = _fingerprint(connection, schema)
    url = make_url(base).set(drivername="postgresql+psycopg")
    options = f"-csearch_path={schema} -csynchronous_commit=off"
    url = url.update_query_dict({"options": options, "application_name": schema})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with psycopg.connect(plain, autocommit=True) as connection:
            connection.execute("SET synchronous_commit = off")
            if migrated is not None and _emptied(connection, schema, fingerprint, migrated):
                _SPARE_SCHEMAS[(plain, migrated)].append((schema, fingerprint))
            else:
                connection.execute(f"DROP SCHEMA {schema} CASCADE")


def make_settings(tmp_path: Path, database_url: str, **overrides: Any) -> Settings:
    """A test's own data folder, database and port; named public URL, long-lived tokens."""
    port = free_port()
    # dicomweb-client sends `Host` without the port, so the tests name the public URL.
    values: dict[str, Any] = {
        "data_dir": tmp_path / "var",
        "database_url": database_url,
        "http_port": port,
        "public_url": f"http://127.0.0.1:{port}",
        "access_token_seconds": 3600,
        # One metrics folder per test process, off the data disk (tests may fill that one).
        "metrics_dir": Path(tempfile.gettempdir()) / f"ferry-test-metrics-{os.getpid()}",
    }
    return Settings(**(values | overrides))


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return make_settings(tmp_path, database_url)


class Ran(NamedTuple):
    """A `ferry` command run in-process: its exit status and what it printed."""

    code: int
    out: str
    err: str

    def rows(self) -> list[list[str]]:
        return [line.split() for line in self.out.splitlines()]

    def completed(self, args: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
        """As `subprocess.run(..., capture_output=True, text=True)` would have returned it."""
        return subprocess.CompletedProcess(["ferry", *args], self.code, self.out, self.err)


@pytest.fixture
def ferry_cli(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> Iterator[Callable[..., Ran]]:
    """Runs `ferry ARGS...` in this process against the test's database, as a user would.

    The command's entry point (`ferry.cli.main`) gets what `ferry` started from a shell would:
    the environment without the test process's FERRY_* variables but with the test's data
    folder and database, the test's folder as working directory, no input. What a command
    leaves in the process is put back: the environment (the metrics folder it names for child
    processes) when the test ends, and the database connections it left open (a command's
    process would have ended) are closed before the test's database is emptied: every engine
    a command connected through is disposed of (a full `gc.collect()` did this before, and cost
    a second a test late in a run, when the test process holds millions of objects). Tests of the
    entry point itself (the installed script, exit statuses, the environment) run `ferry` in a
    subprocess (tests/test_cli_admin.py, tests/audit/test_cli.py, tests/ferry/test_settings.py).
    """
    from ferry.cli import main
    from foundation.metrics import MULTIPROC_VARIABLE

    for name in os.environ:
        if name.startswith("FERRY_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("FERRY_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("FERRY_DATABASE_URL", settings.database_url)
    if MULTIPROC_VARIABLE in os.environ:  # so that monkeypatch puts it back as it was
        monkeypatch.setenv(MULTIPROC_VARIABLE, os.environ[MULTIPROC_VARIABLE])
    else:
        monkeypatch.delenv(MULTIPROC_VARIABLE, raising=False)
    settings.data_dir.parent.mkdir(parents=True, exist_ok=True)
    monkeypatch.chdir(settings.data_dir.parent)

    connected: set[Engine] = set()

    def remember(connection: Any) -> None:
        connected.add(connection.engine)

    def run(*args: str) -> Ran:
        capsys.readouterr()
        event.listen(Engine, "engine_connect", remember)
        try:
            code = main(list(args))
        except SystemExit as exit:  # argparse's usage errors
            code = exit.code if isinstance(exit.code, int) else 1 if exit.code else 0
        finally:
            event.remove(Engine, "engine_connect", remember)
        out, err = capsys.readouterr()
        return Ran(code, out, err)

    yield run
    for engine in connected:  # engines a command did not dispose of: their connections close
        engine.dispose()


@pytest.fixture
def archive(settings: Settings) -> Iterator[Archive]:
    built = build_archive(settings)
    yield built
    built.engine.dispose()


@dataclass
class RunningServer:
    """A served app and a user who may do everything with the studies of institution HOSP."""

    settings: Settings
    archive: Archive
    base_url: str
    app: Starlette
    token: str = ""
    institution_pk: int = 0

    @property
    def dicomweb_url(self) -> str:
        return f"{self.base_url}/dicom-web"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def http(self) -> httpx.Client:
        """An httpx client that sends the tester's token with every request."""
        return httpx.Client(headers=self.headers, timeout=60)

    def token_for(self, email: str, memberships: dict[int, str]) -> str:
        """Another user, with these roles (`{institution_pk: "viewer,receiver"}`)."""
        user_pk = add_user(self.archive.engine, email, memberships=memberships)
        return issue_token_for(self.app, self.archive, user_pk)


TESTER_ROLES = "admin,sender,receiver,viewer"


def issue_token_for(app: Starlette, archive: Archive, user_pk: int) -> str:
    with Session(archive.engine) as session:
        user = session.get(User, user_pk)
        assert user is not None
        return str(app.state.authenticator.issue_access_token(user, datetime.now(UTC)))


def _tester(app: Starlette, archive: Archive) -> tuple[str, int]:
    engine = archive.engine
    with Session(engine) as session:
        existing = session.exec(select(Institution).where(Institution.code == "HOSP")).first()
        institution_pk = existing.pk if existing else None
    if institution_pk is None:
        institution_pk = add_institution(engine, "HOSP")
    email = f"tester-{secrets.token_hex(4)}@ferry.test"
    user_pk = add_user(engine, email, memberships={institution_pk: TESTER_ROLES})
    return issue_token_for(app, archive, user_pk), institution_pk


class _ThreadServer(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # the test runner owns signals
        pass

    async def main_loop(self) -> None:
        """uvicorn's loop, looking at `should_exit` every 10 ms rather than every 100 ms, so a
        test's server stops as soon as the test is done (on_tick still runs every 100 ms)."""
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + 1) % 864000
            for _ in range(10):
                await asyncio.sleep(0.01)
                if self.should_exit:
                    break
            should_exit = await self.on_tick(counter)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's shutdown; with no connection open and no request running, without the
        tenth of a second it gives open connections to finish."""
        if self.server_state.connections or self.server_state.tasks:
            await super().shutdown(sockets)
            return
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        for server in self.servers:
            await server.wait_closed()
        if not self.force_exit:
            await self.lifespan.shutdown()


@contextlib.contextmanager
def serving(app: Starlette, settings: Settings, **options: Any) -> Iterator[str]:
    """`app` under `ferry serve`'s uvicorn configuration (`options`: its other arguments, such
    as `loop`), in a thread until the block ends; yields its base URL once it listens."""
    server = _ThreadServer(server_config(app, settings, log_level="warning", **options))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{settings.http_port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def read_slowly(url: str, pause_s: float = 0.005) -> tuple[httpx.Response, bytes]:
    """GET `url`, its body read in pieces of 256 KiB with a pause after each: slower than a
    server on loopback, which then fills the socket and waits for room."""
    with httpx.stream("GET", url, timeout=30) as response:
        pieces = []
        for piece in response.iter_bytes(256 * 1024):
            pieces.append(piece)
            time.sleep(pause_s)
    return response, b"".join(pieces)


def run_server(settings: Settings, archive: Archive) -> Iterator[RunningServer]:
    from tests._peers import wait_until_http_answers  # it imports this module

    app = create_app(settings, archive)
    with serving(app, settings) as base_url:
        wait_until_http_answers(f"{base_url}/healthz")
        token, institution_pk = _tester(app, archive)
        yield RunningServer(settings, archive, base_url, app, token, institution_pk)


@pytest.fixture
def server(settings: Settings, archive: Archive) -> Iterator[RunningServer]:
    yield from run_server(settings, archive)


@pytest.fixture
def own_server(settings: Settings, archive: Archive) -> Iterator[RunningServer]:
    """A server of the test's own, where a module's `server` is the shared `module_server`."""
    yield from run_server(settings, archive)


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def module_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """One server (and database) for a whole module, on each database in turn.

    For modules whose tests each store data of their own (fresh UIDs from the factories) and
    read back only that: starting a server and making a database costs more than most of
    those tests. A module opts in by defining `server` as this one (see
    tests/dicomweb/test_frames.py); a test that needs a server to itself keeps `server`'s
    own fixtures (settings, archive) or runs `run_server` itself."""
    tmp_path = tmp_path_factory.mktemp("module-server")
    with contextlib.ExitStack() as stack:
        url = migrated_database(request, tmp_path, stack)
        settings = make_settings(tmp_path, url)
        archive = build_archive(settings)
        stack.callback(archive.engine.dispose)
        yield from run_server(settings, archive)


@pytest.fixture
def client(server: RunningServer):  # type: ignore[no-untyped-def]
    from dicomweb_client.api import DICOMwebClient

    return DICOMwebClient(server.dicomweb_url, headers=server.headers)


_STOW_BOUNDARY = "ferry-test-stow"
_STOW_TYPE = 'multipart/related; type="application/dicom"'


def store(server: RunningServer, *datasets: Dataset) -> list[Dataset]:
    """STOW-RS the data sets, a part each, asserting 200; they come back as read from the bytes
    sent, so that a test compares with what the server was given."""
    payloads = [factories.part10_bytes(ds) for ds in datasets]
    body = b"".join(
        f"--{_STOW_BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + p + b"\r\n"
        for p in payloads
    )
    response = httpx.post(
        f"{server.dicomweb_url}/studies",
        content=body + f"--{_STOW_BOUNDARY}--\r\n".encode(),
        headers={"Content-Type": f"{_STOW_TYPE}; boundary={_STOW_BOUNDARY}", **server.headers},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    return [dcmread(io.BytesIO(p)) for p in payloads]
