"""An operation's files are found from its id under a configured folder, and nowhere else."""

from __future__ import annotations

import pytest

from operations.artifacts import artifact_file, artifact_folder
from operations.ids import InvalidIdentifier

OPERATION_ID = "op_training_20261204_101500_0badc0de"


def test_the_folder_is_named_by_the_id_under_the_base(tmp_path):
    assert artifact_folder(tmp_path, OPERATION_ID) == tmp_path.resolve() / OPERATION_ID
    assert artifact_file(tmp_path, OPERATION_ID, "model.pt") == tmp_path.resolve() / OPERATION_ID / "model.pt"


@pytest.mark.parametrize(
    "operation_id",
    ["../../etc", "/etc/passwd", f"{OPERATION_ID}/../../x", f"../{OPERATION_ID}", "", "op_training_x", None],
)
def test_anything_but_an_operation_id_is_refused(tmp_path, operation_id):
    with pytest.raises(InvalidIdentifier):
        artifact_folder(tmp_path, operation_id)


@pytest.mark.parametrize("name", ["../model.pt", "/etc/passwd", "a/b", "..", ".", ""])
def test_a_file_name_with_a_folder_in_it_is_refused(tmp_path, name):
    with pytest.raises(ValueError, match="plain file name"):
        artifact_file(tmp_path, OPERATION_ID, name)


def test_a_link_leading_out_of_the_base_is_refused(tmp_path):
    base, elsewhere = tmp_path / "models", tmp_path / "elsewhere"
    base.mkdir()
    elsewhere.mkdir()
    (base / OPERATION_ID).symlink_to(elsewhere)

    with pytest.raises(ValueError, match="leaves"):
        artifact_folder(base, OPERATION_ID)
