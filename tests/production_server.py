"""A production-shaped MLflow tracking server for end-to-end tests, on loopback only.

``production_server(root)`` starts, and always stops again:

* PostgreSQL (Debian's binaries, ``/usr/lib/postgresql/<version>/bin``) as the backend store:
  a throw-away cluster in a temporary directory, listening on 127.0.0.1 on a free port (and a
  private Unix socket directory), trust authentication, one database ``mlflow``. PostgreSQL
  refuses to run as root, so as root the cluster belongs to the ``postgres`` user (or
  ``nobody``) and ``initdb`` / ``pg_ctl`` run through ``runuser``.
* moto's S3 server (``python -m moto.server``, a subprocess) as the artifact store, with one
  bucket, fake credentials and region us-east-1.
* ``mlflow server --backend-store-uri postgresql+psycopg2://... --artifacts-destination
  s3://<bucket>/mlflow``: clients talk only to this server, which proxies artifacts to S3.

Missing PostgreSQL binaries, ``runuser`` or the Python drivers make the test skip with a reason
that names what is missing (``scripts/test.sh`` installs Debian's ``postgresql``). Every log
goes to a file under ``root``; a service that does not come up fails the test with its log tail.

Use ``production_server_fixture()`` to make a pytest fixture, or the context manager directly.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

#: Fake credentials for moto; nothing here can reach AWS (every endpoint is on 127.0.0.1).
AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_SESSION_TOKEN": "testing", "AWS_SECURITY_TOKEN": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"}
ARTIFACT_PREFIX = "mlflow"  # key prefix of every artifact in the bucket
MLFLOW_START_TIMEOUT = 180  # seconds; the first start runs every database migration
SERVICE_START_TIMEOUT = 60  # seconds, for PostgreSQL and moto


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path: Path, chars: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError as exc:
        return f"<{path} unreadable: {exc}>"


def _wait_until(ready: Callable[[], bool], *, timeout: float, what: str, log: Path,
                proc: subprocess.Popen | None = None) -> None:
    deadline = time.time() + timeout
    while not ready():
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"{what} exited with code {proc.returncode} before it was ready; "
                        f"log {log}:\n{tail(log)}")
        if time.time() > deadline:
            pytest.fail(f"{what} not ready after {timeout:.0f}s; log {log}:\n{tail(log)}")
        time.sleep(0.25)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def _stop_group(proc: subprocess.Popen | None, timeout: float = 20) -> None:
    """SIGTERM the process group of ``proc`` (started with start_new_session), then SIGKILL."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


# --------------------------------------------------------------------------- PostgreSQL


def find_postgres_bin() -> Path:
    """The directory holding initdb/pg_ctl/postgres, or pytest.skip naming what is missing."""
    candidates = []
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(initdb).resolve().parent)
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                      key=lambda p: [int(x) for x in Path(p).parent.name.split(".")
                                     if x.isdigit()], reverse=True)
    candidates += [Path(p) for p in versions]
    for directory in candidates:
        missing = [b for b in ("initdb", "pg_ctl", "postgres") if not (directory / b).exists()]
        if not missing:
            return directory
    looked = ", ".join(str(c) for c in candidates) or "/usr/lib/postgresql/*/bin and PATH"
    pytest.skip(f"PostgreSQL binary 'initdb' (with pg_ctl, postgres) not found in {looked}; "
                "install Debian's 'postgresql' package (scripts/test.sh does)")


@dataclass
class Postgres:
    """A throw-away PostgreSQL cluster on 127.0.0.1:``port``."""

    bindir: Path
    port: int = field(default_factory=free_port)
    home: Path | None = None  # temp dir: data/, socket/, postgres.log
    run_as: list[str] = field(default_factory=list)  # ["runuser", "-u", "postgres", "--"]
    startup_s: float = 0.0

    @property
    def log(self) -> Path:
        assert self.home is not None
        return self.home / "postgres.log"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/mlflow"

    def _prepare_user(self) -> tuple[int, int] | None:
        if os.geteuid() != 0:
            return None
        if shutil.which("runuser") is None:
            pytest.skip("running as root, PostgreSQL needs 'runuser' (util-linux) to drop "
                        "privileges, and it is not on PATH")
        for name in ("postgres", "nobody"):
            try:
                entry = pwd.getpwnam(name)
            except KeyError:
                continue
            self.run_as = ["runuser", "-u", name, "--"]
            return entry.pw_uid, entry.pw_gid
        pytest.skip("running as root and neither a 'postgres' nor a 'nobody' user exists to "
                    "run PostgreSQL as")

    def _run(self, args: list[str], timeout: float = SERVICE_START_TIMEOUT,
             check: bool = True) -> int:
        with open(self.log, "a") as log:
            log.write(f"$ {' '.join(args)}\n")
            log.flush()
            code = subprocess.run([*self.run_as, *args], check=False, stdout=log,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  timeout=timeout, cwd=self.home).returncode
        if code != 0 and check:
            pytest.fail(f"{Path(args[0]).name} failed with code {code}; log {self.log}:\n"
                        f"{tail(self.log)}")
        return code

    def start(self) -> None:
        t0 = time.time()
        owner = self._prepare_user()
        # Not under pytest's tmp dir: that one is 0700 root, unreachable for 'postgres'.
        self.home = Path(tempfile.mkdtemp(prefix="mlflow-xai-pg-"))
        (self.home / "socket").mkdir()
        self.log.touch()
        if owner is not None:
            os.chmod(self.home, 0o755)
            for path in (self.home, self.home / "socket", self.log):
                os.chown(path, *owner)
        data = self.home / "data"
        self._run([str(self.bindir / "initdb"), "-D", str(data), "-U", "postgres",
                   "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"])
        options = (f"-p {self.port} -k {self.home / 'socket'} -c listen_addresses=127.0.0.1 "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
        self._run([str(self.bindir / "pg_ctl"), "-D", str(data), "-l", str(self.log), "-w",
                   "-t", str(SERVICE_START_TIMEOUT), "-o", options, "start"],
                  timeout=SERVICE_START_TIMEOUT + 10)
        self._create_database("mlflow")
        self.startup_s = time.time() - t0

    def _create_database(self, name: str) -> None:
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres",
                                dbname="postgres", connect_timeout=10)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()

    def stop(self) -> None:
        """``pg_ctl stop -m fast`` (then ``immediate``) when a postmaster runs; remove the dir."""
        if self.home is None:
            return
        data = self.home / "data"
        if (data / "postmaster.pid").exists():
            for mode in ("fast", "immediate"):
                try:
                    code = self._run([str(self.bindir / "pg_ctl"), "-D", str(data), "-w", "-t",
                                      "30", "stop", "-m", mode], timeout=40, check=False)
                except subprocess.TimeoutExpired:
                    code = -1
                if code == 0:
                    break
            else:  # keep the cluster's files for a look, and say where they are
                print(f"pg_ctl stop failed; PostgreSQL left in {self.home}:\n{tail(self.log)}")
                return
        shutil.rmtree(self.home, ignore_errors=True)
        self.home = None


# --------------------------------------------------------------------------- moto S3


@dataclass
class MotoS3:
    """moto's S3 server on 127.0.0.1:``port`` in its own process group."""

    root: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None
    startup_s: float = 0.0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.root / "moto.log"

    def start(self) -> None:
        t0 = time.time()
        env = {**os.environ, **AWS_ENV}
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                start_new_session=True)
        _wait_until(lambda: _http_ok(f"{self.endpoint}/moto-api/data.json"),
                    timeout=SERVICE_START_TIMEOUT, what="moto S3 server", log=self.log,
                    proc=self.proc)
        self.startup_s = time.time() - t0

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def stop(self) -> None:
        _stop_group(self.proc)


# --------------------------------------------------------------------------- mlflow server


@dataclass
class ProductionServer:
    """What the tests get: the tracking URL and the S3 side to check the objects."""

    url: str
    bucket: str
    prefix: str
    s3: MotoS3
    postgres: Postgres
    root: Path
    mlflow_log: Path
    startup_s: dict[str, float]

    def s3_keys(self, under: str = "") -> list[str]:
        """Every object key in the bucket under ``<prefix>/<under>``."""
        client = self.s3.client()
        keys: list[str] = []
        for page in client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=f"{self.prefix}/{under}".rstrip("/")):
            keys += [obj["Key"] for obj in page.get("Contents", [])]
        return keys

    def s3_env(self) -> dict[str, str]:
        """Fake credentials and the endpoint: what a process needs to read ``s3://`` itself."""
        return {**AWS_ENV, "MLFLOW_S3_ENDPOINT_URL": self.s3.endpoint}

    def client_env(self, *, s3: bool = False) -> dict[str, str]:
        """Environment for a client subprocess (CLI, watcher) that talks to this server.

        Artifacts go through the server's proxy, so a client needs no S3 access; ``s3=True``
        adds it (for a process that reads an ``s3://`` data set directly)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
        env.update(MLFLOW_TRACKING_URI=self.url, MLFLOW_XAI_PROGRESS="0", PYTHONUNBUFFERED="1")
        if s3:
            env.update(self.s3_env())
        return env

    def upload(self, path: Path, key: str) -> str:
        """Put a local file into the bucket under ``key`` (no prefix added); its s3:// URI."""
        self.s3.client().upload_file(str(path), self.bucket, key)
        return f"s3://{self.bucket}/{key}"


def _require_modules() -> None:
    import importlib.util

    for module, package in (("psycopg2", "psycopg2-binary"), ("boto3", "boto3"),
                            ("moto.server", "moto[server]"), ("flask", "moto[server]")):
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            pytest.skip(f"Python module '{module}' is missing: pip install '{package}' "
                        "(part of the 'test' extra)")


@contextlib.contextmanager
def production_server(root: Path) -> Iterator[ProductionServer]:
    """PostgreSQL + moto S3 + ``mlflow server`` on loopback; everything is stopped on exit."""
    _require_modules()
    bindir = find_postgres_bin()
    root.mkdir(parents=True, exist_ok=True)
    postgres = Postgres(bindir)
    s3 = MotoS3(root)
    proc: subprocess.Popen | None = None
    mlflow_log = root / "mlflow-server.log"
    try:
        postgres.start()
        s3.start()
        bucket = f"mlflow-xai-{uuid.uuid4().hex[:8]}"
        s3.client().create_bucket(Bucket=bucket)

        t0 = time.time()
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
        # No job runner: its seven huey consumer processes serve GenAI jobs this plugin never
        # starts, and on a small CI machine they double the server's start and stop time.
        env.update(AWS_ENV, MLFLOW_S3_ENDPOINT_URL=s3.endpoint, PYTHONUNBUFFERED="1",
                   MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
        with open(mlflow_log, "w") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "mlflow", "server",
                 "--backend-store-uri", postgres.url,
                 "--artifacts-destination", f"s3://{bucket}/{ARTIFACT_PREFIX}",
                 "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                cwd=root, start_new_session=True)
        _wait_until(lambda: _http_ok(f"{url}/health"), timeout=MLFLOW_START_TIMEOUT,
                    what="mlflow server (PostgreSQL store, S3 artifacts)", log=mlflow_log,
                    proc=proc)
        startup = {"postgres": postgres.startup_s, "moto": s3.startup_s,
                   "mlflow": time.time() - t0}
        print(f"\nproduction server up: postgres {startup['postgres']:.1f}s, moto "
              f"{startup['moto']:.1f}s, mlflow server {startup['mlflow']:.1f}s")
        yield ProductionServer(url=url, bucket=bucket, prefix=ARTIFACT_PREFIX, s3=s3,
                               postgres=postgres, root=root, mlflow_log=mlflow_log,
                               startup_s=startup)
    finally:
        stopped = []
        for what, stop in (("mlflow", lambda: _stop_group(proc)), ("moto", s3.stop),
                           ("postgres", postgres.stop)):
            t0 = time.time()
            stop()
            stopped.append(f"{what} {time.time() - t0:.1f}s")
        print(f"\nproduction server stopped: {', '.join(stopped)}")


def production_server_fixture(scope: str = "module") -> Any:
    """A pytest fixture (``scope``) yielding a running :class:`ProductionServer`."""

    @pytest.fixture(scope=scope)
    def _fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProductionServer]:
        with production_server(tmp_path_factory.mktemp("production-server")) as server:
            yield server

    return _fixture
