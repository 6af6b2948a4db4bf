"""progrock.local.postgres_server: finding PostgreSQL's binaries and a private cluster."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from progrock.exceptions import ProgRockError
from progrock.local import postgres_server
from progrock.local.postgres_server import PostgresServer, find_postgres_bindir


def fake_bindir(folder: Path, names: tuple[str, ...] = ("initdb", "postgres")) -> Path:
    folder.mkdir(parents=True)
    for name in names:
        path = folder / name
        path.write_text("#!/bin/sh\n")
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return folder


def test_an_explicit_bindir_is_used_or_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PROGROCK_POSTGRES_BINDIR wins; one without both binaries is refused, quoted."""
    good = fake_bindir(tmp_path / "good")
    monkeypatch.setenv("PROGROCK_POSTGRES_BINDIR", str(good))
    assert find_postgres_bindir() == good
    half = fake_bindir(tmp_path / "half", ("initdb",))
    monkeypatch.setenv("PROGROCK_POSTGRES_BINDIR", str(half))
    with pytest.raises(ProgRockError, match=r"PROGROCK_POSTGRES_BINDIR must be a folder with "):
        find_postgres_bindir()


def test_the_newest_packaged_version_is_preferred(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Among /usr/lib/postgresql/*/bin-like folders, 16 beats 9 (by number, not by text)."""
    for version in ("9", "16", "13"):
        fake_bindir(tmp_path / version / "bin")
    monkeypatch.delenv("PROGROCK_POSTGRES_BINDIR", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(postgres_server, "_PACKAGE_GLOBS", (str(tmp_path / "*" / "bin"),))
    assert find_postgres_bindir() == tmp_path / "16" / "bin"


def test_no_binaries_anywhere_says_what_was_tried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without pg_config, initdb on PATH or a packaged folder: one error listing each."""
    monkeypatch.delenv("PROGROCK_POSTGRES_BINDIR", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(postgres_server, "_PACKAGE_GLOBS", (str(tmp_path / "nowhere-*"),))
    with pytest.raises(ProgRockError) as caught:
        find_postgres_bindir()
    message = str(caught.value)
    assert message.startswith("no PostgreSQL server binaries (initdb, postgres) found"), message
    for tried in ("pg_config (not on PATH)", "initdb (not on PATH)", "nowhere-*"):
        assert tried in message, message


def test_a_private_cluster_serves_queries_and_leaves_nothing_behind() -> None:
    """Started: queries answer on its own port as the progrock superuser (never 5432);
    cleaned up: the server process is gone and so is its folder."""
    try:
        server = PostgresServer()
    except ProgRockError as exc:
        pytest.skip(f"PostgreSQL tests skipped: {exc}")
    psycopg = pytest.importorskip("psycopg")
    try:
        server.start()
        assert server.port != 5432
        with psycopg.connect(server.url) as conn:
            row = conn.execute("SELECT current_user, inet_server_port()").fetchone()
        assert row == ("progrock", server.port)
        if os.geteuid() == 0:  # PostgreSQL refuses root: the cluster belongs to another user
            assert (server.root / "data").stat().st_uid != 0
        process = server.process
        assert process is not None
    finally:
        server.cleanup()
    assert process.poll() is not None
    assert not server.root.exists()
