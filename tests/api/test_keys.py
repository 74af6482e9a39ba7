"""API key lifecycle through the real CLI (`python -m kdcli.main admin ...` on a temp SQLite) and real HTTP:
create with an expiry, list (never the key), revoke; a revoked or expired key answers 401 at once."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from kdservice.settings import Settings
from tests.helpers import ApiServer, assert_problem, read_response, send_head, serve, wait_until
from tests.paths import REPO


@pytest.fixture(scope="module")
def var_dir(tmp_path_factory: pytest.TempPathFactory):
    return tmp_path_factory.mktemp("keys")


def kd_admin(var_dir, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "KD_ARTIFACT_DIR": str(var_dir)}
    env.pop("KD_DATABASE_URL", None)
    return subprocess.run([sys.executable, "-m", "kdcli.main", "admin", *args], env=env, capture_output=True,
                          text=True, timeout=120, cwd=REPO)


@pytest.fixture(scope="module")
def api_server(var_dir):
    yield from serve(Settings(artifact_dir=var_dir, events_poll_seconds=0.05))


def create_key(var_dir, *args: str) -> str:
    result = kd_admin(var_dir, "create-key", *args)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def listing(var_dir) -> list[dict[str, str]]:
    result = kd_admin(var_dir, "list-keys")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    columns = lines[0].split()
    return [dict(zip(columns, line.split(), strict=False)) for line in lines[1:]]


def status(server: ApiServer, key: str) -> int:
    with server.client(key) as client:
        return client.get("/v1/jobs").status_code


@pytest.mark.slow
def test_revoked_key_is_refused_at_once(api_server: ApiServer, var_dir):
    key, other = create_key(var_dir, "carol"), create_key(var_dir, "dave")
    rows = listing(var_dir)
    carol = next(r for r in rows if r["name"] == "carol")
    assert key.startswith(carol["prefix"]) and carol["expires"] == "-" and carol["revoked"] == "-"
    assert len(carol["id"]) == 32
    listed = kd_admin(var_dir, "list-keys").stdout
    assert key not in listed and other not in listed  # never the key itself
    assert status(api_server, key) == 200
    revoked = kd_admin(var_dir, "revoke-key", carol["prefix"])
    assert revoked.returncode == 0 and carol["id"] in revoked.stdout, revoked.stderr
    # The very next request of the running server: no cache outlives a revocation.
    with api_server.client(key) as client:
        body = assert_problem(client.get("/v1/jobs"), 401, "Authorization")
    assert "revoked" in body["detail"]
    assert status(api_server, other) == 200  # only that key
    assert next(r for r in listing(var_dir) if r["name"] == "carol")["revoked"] != "-"
    # Uploads check the key before the body too.
    with send_head(api_server.base_url, "POST", "/v1/models",
                   {"Authorization": f"Bearer {key}", "Content-Type": "multipart/form-data; boundary=x",
                    "Content-Length": "100000"}, b"--x\r\n") as sock:
        assert read_response(sock)[0] == 401
    again = kd_admin(var_dir, "revoke-key", carol["id"])
    assert again.returncode == 0 and "already revoked" in again.stdout


@pytest.mark.slow
def test_expiring_key(api_server: ApiServer, var_dir):
    key = create_key(var_dir, "erin", "--expires-in", "0.0001")  # 8.6 s
    assert status(api_server, key) == 200
    assert next(r for r in listing(var_dir) if r["name"] == "erin")["expires"] != "-"
    wait_until(lambda: status(api_server, key) == 401, 30, 0.2, "the key to expire")
    with api_server.client(key) as client:
        assert "expired" in assert_problem(client.get("/v1/jobs"), 401)["detail"]
    assert "expired" in kd_admin(var_dir, "list-keys").stdout


@pytest.mark.parametrize(("args", "words"), [
    (("revoke-key", "kd_nothing"), "no API key"),
    (("create-key", "x", "--expires-in", "-1"), "between 0 and 36500"),
    (("create-key", "x", "--expires-in", "soon"), "invalid"),
])
def test_admin_mistakes_exit_2(var_dir, args, words):
    result = kd_admin(var_dir, *args)
    assert result.returncode == 2 and words in result.stderr, result.stderr


def test_ambiguous_prefix_is_refused(var_dir):
    from kdservice.db import make_engine, make_sessionmaker
    from kdservice.tables import ApiKey

    engine = make_engine(f"sqlite:///{var_dir / 'kd.db'}")
    with make_sessionmaker(engine).begin() as session:  # two keys that share a listed prefix
        for i in range(2):
            session.add(ApiKey(name=f"twin{i}", key_hash=f"{i}" * 64, prefix="kd_twin000"))
    engine.dispose()
    result = kd_admin(var_dir, "revoke-key", "kd_twin000")
    assert result.returncode == 2 and "2 keys" in result.stderr
