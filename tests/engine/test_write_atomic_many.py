"""``write_atomic_many``: each file replaced whole, no temporary file left, also when one cannot be written."""

from __future__ import annotations

import pytest

from engine.config import write_atomic_many


def test_files_in_two_directories_are_replaced_and_nothing_else_stays(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "lower").write_text("old\n")
    write_atomic_many([(tmp_path / "a" / "lower", "s1:t2\n"), (tmp_path / "b" / "rec", "s1:t2\n")], mode=0o600)
    assert (tmp_path / "a" / "lower").read_text() == (tmp_path / "b" / "rec").read_text() == "s1:t2\n"
    assert (tmp_path / "b" / "rec").stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a", "b", "lower", "rec"]


def test_a_file_that_cannot_be_written_leaves_the_others_as_they_were(tmp_path):
    (tmp_path / "lower").write_text("old\n")
    with pytest.raises(FileNotFoundError):
        write_atomic_many([(tmp_path / "lower", "new\n"), (tmp_path / "missing" / "rec", "new\n")])
    assert (tmp_path / "lower").read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["lower"]
