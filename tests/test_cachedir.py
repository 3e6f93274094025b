"""ganbench/cachedir.py: the private folders of the user's cache (GMM's C library, Inductor's caches)."""
import os

import pytest

from ganbench.cachedir import private_dir, root
from ganbench.errors import GanbenchError


def test_root_follows_ganbench_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GANBENCH_CACHE", str(tmp_path / "c"))
    assert root() == tmp_path / "c"
    monkeypatch.delenv("GANBENCH_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert root() == tmp_path / "home" / ".cache" / "ganbench"


def test_new_folder_is_0700(tmp_path, monkeypatch):
    monkeypatch.setenv("GANBENCH_CACHE", str(tmp_path / "c"))
    old = os.umask(0)   # mode 0700 does not rely on the umask
    try:
        path = private_dir("x")
    finally:
        os.umask(old)
    assert path == tmp_path / "c" / "x" and os.stat(path).st_mode & 0o777 == 0o700


@pytest.mark.parametrize("kind", ["symlink", "file"])
def test_a_link_or_file_in_its_place_is_refused_and_kept(tmp_path, monkeypatch, kind):
    """A symbolic link could lead anywhere (another user's folder): refused, not followed, not deleted."""
    monkeypatch.setenv("GANBENCH_CACHE", str(tmp_path / "c"))
    (tmp_path / "c").mkdir()
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    if kind == "symlink":
        (tmp_path / "c" / "x").symlink_to(target)
    else:
        (tmp_path / "c" / "x").write_text("")
    with pytest.raises(GanbenchError, match=r"cache folder .*/c/x is not a directory \(a symbolic link or a file\)"):
        private_dir("x")
    assert os.path.lexists(tmp_path / "c" / "x") and target.is_dir()
