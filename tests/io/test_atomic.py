"""Atomic saves (jaxnets/io/_atomic.py): OS errors as FileWriteError, the old file untouched, and
temporary files of dead writers removed by the next save into the same folder."""

from __future__ import annotations

import errno
import json
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import jaxnets
from jaxnets import FileWriteError, JaxnetsError
from jaxnets.io import _atomic
from jaxnets.io import format as fmt

SCRIPTS = Path(__file__).parent / "scripts"


@pytest.fixture
def old_file(tmp_path: Path) -> Path:
    path = tmp_path / "w.jnet"
    jaxnets.save_state_dict(path, {"a": np.arange(3, dtype=np.float32)})
    return path


def _tmp_files(folder: Path) -> list[str]:
    return sorted(f for f in os.listdir(folder) if f.endswith(".tmp"))


def _failing(
    real: Callable[..., Any], err: int, when: Callable[..., bool] = lambda *a: True
) -> Callable[..., Any]:
    def fake(*args: Any, **kwargs: Any) -> Any:
        if when(*args):
            raise OSError(err, os.strerror(err))
        return real(*args, **kwargs)

    return fake


@pytest.mark.parametrize("size", [1 << 16, 16 << 20])  # written inline / by the writer thread
@pytest.mark.parametrize(
    "call, err, what",
    [
        ("open", errno.EROFS, "creating a temporary file"),
        ("writev", errno.ENOSPC, "writing"),
        ("pwrite", errno.ENOSPC, "writing"),
        ("fsync", errno.EIO, "flushing"),
        ("replace", errno.EROFS, "renaming"),
    ],
)
def test_an_os_error_at_any_step_is_a_file_write_error_and_the_old_file_is_intact(
    old_file: Path, monkeypatch: pytest.MonkeyPatch, call: str, err: int, what: str, size: int
) -> None:
    before = old_file.read_bytes()
    folder = str(old_file.parent)
    # Fail only this save's own calls (paths in its folder), not whatever else runs meanwhile.
    when = (
        (lambda p, *a: str(p).startswith(folder))
        if call in ("open", "replace")
        else (lambda *a: True)
    )
    monkeypatch.setattr(os, call, _failing(getattr(os, call), err, when))
    msg = (
        rf"w\.jnet: cannot save: {os.strerror(err)} \(while {what}.*the destination was not changed"
    )
    with pytest.raises(FileWriteError, match=msg) as info:
        jaxnets.save_state_dict(old_file, {"a": np.zeros(size // 4, np.float32)})
    monkeypatch.undo()
    e = info.value
    assert isinstance(e, OSError) and isinstance(e, JaxnetsError)
    assert e.errno == err and e.strerror == os.strerror(err) and e.file == str(old_file)
    assert old_file.read_bytes() == before
    assert _tmp_files(old_file.parent) == []


def test_a_real_size_limit_mid_write_is_a_file_write_error_and_the_old_file_is_intact(
    old_file: Path,
) -> None:
    # RLIMIT_FSIZE makes the kernel refuse the write (EFBIG), as a full disk refuses it (ENOSPC);
    # running as root, permissions cannot. A subprocess, so the limit binds nothing else.
    before = old_file.read_bytes()
    out = subprocess.run(
        [sys.executable, str(SCRIPTS / "write_over_limit.py"), str(old_file), str(4 << 20)],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["type"] == "FileWriteError" and got["is_oserror"] and got["errno"] == errno.EFBIG
    assert got["file"] == str(old_file)
    assert "cannot save: File too large (while writing" in got["message"]
    assert old_file.read_bytes() == before
    assert _tmp_files(old_file.parent) == []


def test_errors_of_the_data_source_pass_through_unchanged(old_file: Path) -> None:
    # An OSError raised by a tensor's own source is not a write error of the destination.
    def bad() -> np.ndarray:
        raise FileNotFoundError(errno.ENOENT, "source gone", "/elsewhere")

    before = old_file.read_bytes()
    with pytest.raises(FileNotFoundError, match="source gone") as info:
        fmt.write_file(old_file, [fmt.TensorSource("x", "model", "float32", (2,), bad)], {})
    assert not isinstance(info.value, JaxnetsError)
    assert old_file.read_bytes() == before and _tmp_files(old_file.parent) == []


def test_temp_file_is_named_after_the_writer_and_new_files_follow_the_umask(tmp_path: Path) -> None:
    seen: list[str] = []

    def look() -> np.ndarray:
        seen.extend(_tmp_files(tmp_path))
        return np.zeros(2, np.float32)

    fmt.write_file(tmp_path / "m.jnet", [fmt.TensorSource("x", "model", "float32", (2,), look)], {})
    assert len(seen) == 1
    m = _atomic.TEMP_PATTERN.fullmatch(seen[0])
    assert (
        m
        and m["name"] == "m.jnet"
        and int(m["pid"]) == os.getpid()
        and m["host"] == _atomic._host()
    )
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "m.jnet").stat().st_mode) == 0o666 & ~umask
    assert _tmp_files(tmp_path) == []


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[Callable[[str], tuple[subprocess.Popen[str], str]]]:
    """Starts writers blocked half-way through a save; kills them all at the end."""
    procs: list[subprocess.Popen[str]] = []

    def start(name: str) -> tuple[subprocess.Popen[str], str]:
        p = subprocess.Popen([sys.executable, str(SCRIPTS / "blocked_writer.py"), str(tmp_path / name)],
                             stdout=subprocess.PIPE, text=True)  # fmt: skip
        procs.append(p)
        line = _readline(p, timeout=120)
        assert line.startswith("READY "), line
        return p, line.split(" ", 1)[1].strip()

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(timeout=30)


def _readline(p: subprocess.Popen[str], timeout: float) -> str:
    import selectors

    assert p.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(p.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            p.kill()
            raise TimeoutError("the writer did not start in time")
    return p.stdout.readline()


def test_next_save_removes_temp_files_of_killed_writers_only(tmp_path: Path, writer: Any) -> None:
    dead, dead_tmp = writer("a.jnet")
    live, live_tmp = writer("b.jnet")
    dead.send_signal(signal.SIGKILL)
    dead.wait(timeout=30)  # reaped: its pid no longer exists
    host = _atomic._host()
    other_host = format(int(host, 16) ^ 1, "08x")
    keep = [
        f".c.jnet.{dead.pid}.{other_host}.0123abcd.tmp",  # a dead pid, but on another host (shared fs)
        f".c.jnet.{dead.pid}.{host}.0123abcd.tmp.bak",  # not the exact pattern
        f".c.jnet.{dead.pid}.tmp",  # not the exact pattern
        f"c.jnet.{dead.pid}.{host}.0123abcd.tmp",  # no leading dot
    ]
    for name in keep:
        (tmp_path / name).write_bytes(b"x")
    assert os.path.exists(dead_tmp) and os.path.exists(live_tmp)

    jaxnets.save_state_dict(tmp_path / "c.jnet", {"x": np.ones(2, np.float32)})

    assert not os.path.exists(dead_tmp)
    assert os.path.exists(live_tmp), "a live writer's temporary file was removed"
    assert all((tmp_path / name).exists() for name in keep)
    assert live.poll() is None  # the live writer was not disturbed
    np.testing.assert_array_equal(jaxnets.load(tmp_path / "c.jnet").params["x"], np.ones(2))
    assert not (tmp_path / "a.jnet").exists()  # the killed save never produced its file


def test_remove_stale_spares_this_process_and_unknown_pids(tmp_path: Path) -> None:
    host = _atomic._host()
    mine = tmp_path / f".m.jnet.{os.getpid()}.{host}.00000000.tmp"  # e.g. a save in another thread
    huge = tmp_path / f".m.jnet.9999999999.{host}.00000000.tmp"  # not a pid the OS can check
    for p in (mine, huge):
        p.write_bytes(b"x")
    assert _atomic.remove_stale(str(tmp_path)) == []
    assert mine.exists() and huge.exists()


def test_a_writer_thread_failure_of_any_kind_reaches_the_caller_without_a_hang(
    old_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    before = old_file.read_bytes()
    monkeypatch.setattr(os, "writev", lambda *a: (_ for _ in ()).throw(MemoryError("no buffer")))
    seen: list[BaseException] = []

    def save() -> None:
        try:  # 64 tensors of 1 MiB: written by the background thread, the queue fills up
            jaxnets.save_state_dict(
                old_file, {f"t{i}": np.zeros(1 << 18, np.float32) for i in range(64)}
            )
        except BaseException as e:
            seen.append(e)

    t = threading.Thread(target=save, daemon=True)  # a hang must not block the test run
    t.start()
    t.join(timeout=120)
    assert not t.is_alive(), "the save hung"
    assert len(seen) == 1 and isinstance(seen[0], MemoryError) and "no buffer" in str(seen[0])
    assert old_file.read_bytes() == before and _tmp_files(old_file.parent) == []
