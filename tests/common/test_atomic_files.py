"""Atomic writes: a failed write leaves the old file and no temporary file behind."""

import numpy as np
import pytest

from mdmonitor.common.atomic_files import replaced_atomically, write_atomically
from mdmonitor.estimators.files import read_npz, write_npz


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "alpha.json"
    write_atomically(path, "old")
    with pytest.raises(RuntimeError, match="disk full"):
        with replaced_atomically(path) as temporary:
            temporary.write_text("half")
            raise RuntimeError("disk full")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["alpha.json"]


def test_npz_written_under_any_name_is_the_named_file(tmp_path):
    write_npz(tmp_path / "errors.log", errors=np.arange(3.0))
    np.testing.assert_array_equal(read_npz(tmp_path / "errors.log", "error log")["errors"],
                                  np.arange(3.0))
    assert [p.name for p in tmp_path.iterdir()] == ["errors.log"]
