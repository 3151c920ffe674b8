"""`centre user add|list|remove` and `serve_console` from a real centre.toml."""

from __future__ import annotations

import asyncio
import socket
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from centre.cli import app
from centre.config import load_centre_config
from centre.console import auth, serve_console
from centre.db import open_database
from edge_agent.errors import ConfigError


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _centre_file(tmp_path: Path, port: int = 0) -> Path:
    path = tmp_path / "centre.toml"
    path.write_text(f'[database]\nurl = "sqlite:///centre.db"\n[console]\nlisten = "127.0.0.1:{port}"\n')
    return path


def test_user_add_list_remove(tmp_path: Path) -> None:
    config = _centre_file(tmp_path)
    runner = CliRunner()
    (tmp_path / "pw").write_text("a-long-password\n")
    done = runner.invoke(
        app, ["user", "add", "ana", "--role", "operator", "-c", str(config), "--password-file", str(tmp_path / "pw")]
    )
    assert done.exit_code == 0, done.output
    done = runner.invoke(app, ["user", "add", "vic", "-c", str(config)], input="viewer-pass\nviewer-pass\n")
    assert done.exit_code == 0, done.output
    with open_database(f"sqlite:///{tmp_path / 'centre.db'}") as db:
        assert auth.authenticate(db, "ana", "a-long-password") == "operator"
        assert auth.authenticate(db, "vic", "viewer-pass") == "viewer"  # the default role
    listed = runner.invoke(app, ["user", "list", "-c", str(config)])
    assert listed.exit_code == 0 and [line.split()[:2] for line in listed.output.splitlines()] == [
        ["ana", "operator"],
        ["vic", "viewer"],
    ]
    bad = runner.invoke(
        app, ["user", "add", "x", "--role", "admin", "-c", str(config), "--password-file", str(tmp_path / "pw")]
    )
    assert bad.exit_code == 2 and "admin" in bad.output
    missing = runner.invoke(app, ["user", "add", "x", "-c", str(config), "--password-file", str(tmp_path / "none")])
    assert missing.exit_code == 2 and "cannot read it" in missing.output
    assert runner.invoke(app, ["user", "remove", "vic", "-c", str(config)]).exit_code == 0
    again = runner.invoke(app, ["user", "remove", "vic", "-c", str(config)])
    assert again.exit_code == 1 and "no account named 'vic'" in again.output


async def test_serve_console_listens_where_the_file_says_until_cancelled(tmp_path: Path) -> None:
    port = _free_port()
    config = load_centre_config(_centre_file(tmp_path, port))
    with open_database(config.database_url) as db:

        async def publish(topic: str, payload: bytes, *, retain: bool = False) -> None:
            raise AssertionError("nothing to publish")

        task = asyncio.create_task(serve_console(config, db, publish))
        url = f"http://127.0.0.1:{port}/healthz"
        for _ in range(100):
            try:
                body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read())
                break
            except OSError:
                await asyncio.sleep(0.05)
        else:
            raise AssertionError("the console never listened")
        assert body == b"ok\n"
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert task.cancelled()
        await asyncio.sleep(0.05)
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0  # closed


async def test_a_taken_port_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        config = load_centre_config(_centre_file(tmp_path, int(taken.getsockname()[1])))
        with open_database(config.database_url) as db:

            async def publish(topic: str, payload: bytes, *, retain: bool = False) -> None:
                raise AssertionError("nothing to publish")

            with pytest.raises(ConfigError) as caught:
                await serve_console(config, db, publish)
    [problem] = caught.value.problems
    assert problem.path == "console.listen" and "cannot listen on 127.0.0.1:" in problem.message
