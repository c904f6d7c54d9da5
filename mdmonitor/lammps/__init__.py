"""mdmonitor in LAMMPS: the plugin (pair_style and fix mdmonitor) and its build, the export of an
estimator as one TorchScript file, and running an input script with the plugin loaded.

Importing this package imports neither torch nor LAMMPS: `lmp` imports `mdmonitor.lammps.plugin`
on every start through the `lammps.plugins` entry point."""
