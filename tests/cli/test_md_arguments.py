"""`mdmonitor md` refuses an option out of range with a usage error naming it, before any model
is loaded (`--steps -5` ran nothing and exited 0; `--temperature -300` hung)."""

import ase.io
import pytest

from mdmonitor.cli import main
from tests.extraction.test_cutting import water_box
from tests.untrained_mace import untrained_mace


@pytest.mark.parametrize("option, value, message", [
    ("--steps", "-5", "non-negative integer, got -5"),
    ("--temperature", "-300", "non-negative number, got -300.0"),
    ("--temperature", "nan", "non-negative number, got nan"),
    ("--timestep", "0", "positive number, got 0.0"),
    ("--friction", "-0.01", "non-negative number, got -0.01"),
    ("--interval", "0", "positive integer, got 0"),
    ("--frame-interval", "-1", "positive integer, got -1"),
    ("--seed", "-1", "non-negative integer, got -1"),
    ("--stop-threshold", "-1", "positive number, got -1.0"),
    ("--max-boxes", "-1", "positive integer, got -1"),
    ("--core-radius", "inf", "positive number, got inf"),
    ("--box-length", "0", "positive number, got 0.0"),
])
def test_md_refuses_an_option_out_of_range_by_name(models, cu_bulk, tmp_path, capsys, option,
                                                   value, message):
    ase.io.write(tmp_path / "start.extxyz", cu_bulk)
    with pytest.raises(SystemExit) as done:  # (--steps 0: no MD at all, had it been accepted)
        main(["md", str(tmp_path / "start.extxyz"), "--llpr", models["llpr"], "--steps", "0",
              "--threshold", "1e9", "--extract", "cube", "--queue", str(tmp_path / "queue"),
              "--log", str(tmp_path / "m.csv"), "--trajectory", str(tmp_path / "t.extxyz"),
              option, value])
    assert done.value.code == 2
    assert f"error: argument {option}: value must be a {message}" in capsys.readouterr().err
    assert not (tmp_path / "m.csv").exists()


def test_demo_refuses_negative_steps_and_temperature(capsys):
    for option, value in (("--steps", "-1"), ("--temperature", "-600")):
        with pytest.raises(SystemExit) as done:
            main(["demo", option, value])
        assert done.value.code == 2
        assert f"argument {option}: value must be a non-negative" in capsys.readouterr().err


def test_md_cuts_cubes_of_whole_molecules(tmp_path, capsys):
    """--extract cube --molecules --centres O on 64 waters (two untrained H/O MACE models: only
    the cut is looked at): centred on an oxygen, every oxygen with both its hydrogens; either
    option without --extract (cube) refused, and a symbol that is not an element."""
    members = [str(untrained_mace(tmp_path / f"water_{k}.model", [1, 8], [-13.6, -432.0],
                                  seed=k)) for k in range(2)]
    ase.io.write(tmp_path / "water.extxyz", water_box())
    run = ["md", str(tmp_path / "water.extxyz"), "--committee", *members, "--steps", "0",
           "--threshold", "1e-12", "--log", str(tmp_path / "m.csv"),
           "--trajectory", str(tmp_path / "t.extxyz"), "--queue", str(tmp_path / "queue")]
    assert main([*run, "--extract", "cube", "--box-length", "8", "--core-radius", "3",
                 "--relax", "label", "--molecules", "--centres", "O"]) == 0
    [box] = [ase.io.read(path) for path in (tmp_path / "queue" / "pending").glob("*.extxyz")]
    assert box.info["molecules"] is True and box.numbers[0] == 8
    assert (box.numbers == 1).sum() == 2 * (box.numbers == 8).sum() > 0
    capsys.readouterr()
    assert main([*run, "--overwrite", "--molecules"]) == 1
    assert "--molecules needs --extract cube" in capsys.readouterr().err
    assert main([*run, "--overwrite", "--centres", "O"]) == 1
    assert "--centres chooses where --extract cuts" in capsys.readouterr().err
    assert main([*run, "--overwrite", "--extract", "cube", "--centres", "Ox"]) == 1
    assert "--centres: 'Ox' is not a chemical symbol" in capsys.readouterr().err
