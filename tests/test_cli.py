import subprocess
import sys

import pytest

from sidrec.data import resolve
from sidrec.errors import SidrecError


def sidrec(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "sidrec", *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          timeout=120)


def test_user_error_is_one_line_without_traceback(tmp_path):
    r = sidrec("data", "import-minionerec", tmp_path / "missing", "--out", tmp_path / "x")
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert "MiniOneRec folder does not exist" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_help_lists_stages():
    r = sidrec("--help")
    assert r.returncode == 0
    for cmd in ("data", "baseline", "demo"):
        assert cmd in r.stdout


def test_offline_without_data_stops_at_once_with_how_to(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./data, no ../shared here
    monkeypatch.setattr(resolve, "DEFAULT_CANDIDATES", (tmp_path / "data" / "X",))
    monkeypatch.setattr(resolve, "reachable", lambda url, timeout=3.0: False)
    with pytest.raises(SidrecError, match="make demo DATA="):
        resolve.resolve_data(None, tmp_path / "run")
    assert not (tmp_path / "run" / "dataset").exists()


def test_resolve_imports_minionerec_once(shared_industrial, tmp_path):
    first = resolve.resolve_data(shared_industrial, tmp_path)
    stamp = (first / "manifest.json").stat().st_mtime_ns
    again = resolve.resolve_data(shared_industrial, tmp_path)
    assert again == first and (first / "manifest.json").stat().st_mtime_ns == stamp
