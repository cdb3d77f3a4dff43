"""The one progress bar (jaxnets/core/progress.py): forced on it draws, auto is silent off a tty."""

from __future__ import annotations

import builtins
import io
import sys

import pytest

from jaxnets.core import progress as prog


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_forced_on_writes_a_bar_counted_in_bytes_to_stderr(capsys):
    pytest.importorskip("tqdm")  # an extra (examples); the text bar is tested below
    with prog.progress(3 << 20, "saving m.jnet", True) as bar:
        for _ in range(3):
            bar.update(1 << 20)
    err = capsys.readouterr().err
    assert "saving m.jnet" in err
    assert "100%" in err and "3.00M" in err  # tqdm's byte units (unit_divisor 1024)


def test_forced_on_without_tqdm_draws_a_text_bar(capsys, monkeypatch):
    real_import = builtins.__import__

    def no_tqdm(name, *args, **kwargs):
        if name == "tqdm":
            raise ImportError("no tqdm here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tqdm)
    with prog.progress(2 << 30, "loading", True) as bar:
        bar.update(1 << 30)
        bar.update(1 << 30)
    err = capsys.readouterr().err
    assert "loading: 100% |" in err and "2.00/2.00 GiB" in err
    with prog.progress(3 << 20, "saving", True) as bar:
        bar.update(1 << 20)
    assert "saving:  33% |" in capsys.readouterr().err.split("\r")[-1]
    with prog.progress(1536, "x", True) as bar:
        bar.update(1536)
    assert "1.50/1.50 KiB" in capsys.readouterr().err


def test_auto_is_silent_when_stderr_is_not_a_terminal(capsys):
    with prog.progress(8 << 30, "saving", None) as bar:
        assert not bar.enabled
        bar.update(8 << 30)
    assert capsys.readouterr().err == ""


def test_auto_shows_a_bar_on_a_terminal_from_1_gib_only(monkeypatch):
    tty = _Tty()
    monkeypatch.setattr(sys, "stderr", tty)
    with prog.progress(prog.AUTO_BYTES - 1, "small", None) as bar:
        assert not bar.enabled
    with prog.progress(prog.AUTO_BYTES, "big", None) as bar:
        assert bar.enabled
        bar.update(prog.AUTO_BYTES)
    assert "big" in tty.getvalue() and "small" not in tty.getvalue()


def test_false_is_silent_even_on_a_terminal(monkeypatch):
    tty = _Tty()
    monkeypatch.setattr(sys, "stderr", tty)
    with prog.progress(8 << 30, "saving", False) as bar:
        bar.update(8 << 30)
    assert tty.getvalue() == ""


@pytest.mark.parametrize("bad", [1, "yes", 0.5])
def test_progress_takes_only_none_true_or_false(bad):
    with pytest.raises(TypeError, match="progress= takes None"):
        prog.progress(10, "x", bad)


def test_polled_moves_the_bar_while_the_work_runs_and_completes_it(monkeypatch):
    import threading
    import time

    done = {"n": 0}
    seen = threading.Event()

    def measure() -> int:
        done["n"] += 100
        if done["n"] >= 300:
            seen.set()
        return done["n"]

    with prog.progress(1000, "writing", True) as bar, prog.polled(bar, measure, interval=0.01):
        assert seen.wait(5)  # the work "runs" until the poller has measured three times
        time.sleep(0.05)
        assert 300 <= bar._done < 1000
    assert bar._done == 1000  # completed at the end, whatever was measured


def test_polled_leaves_a_failed_work_short_of_its_end():
    with pytest.raises(RuntimeError):
        with prog.progress(1000, "writing", True) as bar, prog.polled(bar, lambda: 10, interval=0.01):
            raise RuntimeError("disk full")
    assert bar._done < 1000


def test_files_bytes_counts_a_step_under_its_final_and_temporary_names_only(tmp_path):
    (tmp_path / "3" / "arrays").mkdir(parents=True)
    (tmp_path / "3" / "arrays" / "a").write_bytes(b"x" * 10)
    (tmp_path / "3.orbax-checkpoint-tmp-17").mkdir()
    (tmp_path / "3.orbax-checkpoint-tmp-17" / "b").write_bytes(b"x" * 5)
    (tmp_path / "30").mkdir()
    (tmp_path / "30" / "c").write_bytes(b"x" * 100)
    assert prog.files_bytes(str(tmp_path), "3") == 15
    assert prog.files_bytes(str(tmp_path / "missing"), "3") == 0


def test_bytes_read_grows_as_this_process_reads_a_file(tmp_path):
    if prog.bytes_read() == 0:
        pytest.skip("no /proc/self/io here")
    path = tmp_path / "f"
    path.write_bytes(b"x" * (1 << 20))
    before = prog.bytes_read()
    path.read_bytes()
    assert prog.bytes_read() - before >= 1 << 20
