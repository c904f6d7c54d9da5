"""The package layout is a checked rule: each stage imports only the stages below it."""

import configparser
import pkgutil
import subprocess
import sys
from pathlib import Path

import mdmonitor

ROOT = Path(__file__).resolve().parents[1]
CONTRACTS = ROOT / ".importlinter"


def test_import_contracts_hold():
    done = subprocess.run([str(Path(sys.executable).parent / "lint-imports"), "--config",
                           str(CONTRACTS)], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_every_top_level_module_has_a_layer():
    config = configparser.ConfigParser()
    config.read(CONTRACTS)
    layers = config["importlinter:contract:pipeline"]["layers"]
    placed = {name.strip() for line in layers.split("\n") for name in line.split("|")}
    modules = {f"mdmonitor.{module.name}" for module in pkgutil.iter_modules(mdmonitor.__path__)}
    assert modules - placed == set()


def test_public_api_is_unchanged():
    assert mdmonitor.__all__ == sorted(
        ["Calibration", "Combined", "Committee", "Extractor", "Instability", "LTAU", "Labeler",
         "LastLayerLPR", "LatentGMM", "MonitoredCalculator", "Reference", "StabilityCriteria",
         "Trigger", "UncertaintyLimitExceeded", "aggregate", "demo_models",
         "keep_freed_memory"])
    for name in mdmonitor.__all__:
        assert getattr(mdmonitor, name).__name__ == name
