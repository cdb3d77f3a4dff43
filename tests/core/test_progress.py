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
