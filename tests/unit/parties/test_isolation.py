"""Walls between parties in one process: a party opens its own folder and no other party's."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from crosslm_secure.isolation import acting_as, current_party, walls


@pytest.fixture
def folders(tmp_path: Path) -> dict[str, Path]:
    made = {}
    for name in ("server", "client-1", "client-2"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "data.csv").write_text("note,outcome\n")
        made[name] = tmp_path / name
    return made


def test_a_party_opens_its_own_folder(folders: dict[str, Path]) -> None:
    with walls(folders), acting_as("client-1"):
        assert current_party() == "client-1"
        assert (folders["client-1"] / "data.csv").read_text() == "note,outcome\n"
        (folders["client-1"] / "state.json").write_text("{}")
    assert current_party() is None


@pytest.mark.parametrize("acting", ["server", "client-2", None])
def test_anyone_else_is_refused_with_a_sentence_naming_both(folders: dict[str, Path], acting: str | None) -> None:
    with walls(folders):
        with pytest.raises(PermissionError) as refused:
            if acting is None:
                open(folders["client-1"] / "data.csv").close()
            else:
                with acting_as(acting):
                    open(folders["client-1"] / "data.csv").close()
    message = str(refused.value)
    assert "client-1's" in message and str(folders["client-1"] / "data.csv") in message
    assert (acting or "no party") in message


def test_listing_another_party_s_folder_is_refused(folders: dict[str, Path]) -> None:
    with walls(folders), acting_as("server"):
        with pytest.raises(PermissionError):
            os.listdir(folders["client-2"])
        with pytest.raises(PermissionError):
            list(os.scandir(folders["client-2"]))
        assert os.listdir(folders["server"]) == ["data.csv"]


def test_a_sibling_with_a_longer_name_is_not_mistaken_for_the_folder(folders: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "client-10").mkdir()
    (tmp_path / "client-10" / "x").write_text("x")
    with walls(folders), acting_as("server"):
        assert (tmp_path / "client-10" / "x").read_text() == "x"


def test_walls_come_down_after_the_block(folders: dict[str, Path]) -> None:
    with walls(folders):
        pass
    assert (folders["client-1"] / "data.csv").read_text() == "note,outcome\n"
