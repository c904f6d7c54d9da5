"""mdmonitor: on-the-fly, spatially resolved uncertainty monitoring for MACE molecular dynamics."""

from setuptools import find_packages, setup

setup(
    name="mdmonitor",
    version="0.1.0",
    description="Spatially resolved uncertainty monitoring for MACE molecular dynamics "
    "(ASE calculator, LAMMPS fix, MPI)",
    packages=find_packages(include=["mdmonitor", "mdmonitor.*"]),
    package_data={"mdmonitor": ["data/*.model", "data/*.npz", "data/*.extxyz"]},
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.1",
        "mace-torch>=0.3.10",
        "ase>=3.29",
        "numba>=0.59",
        "numpy",
        "faiss-cpu>=1.7",
        "scikit-learn>=1.3",
        "tqdm",
        "matplotlib",
        "lammps[mpi]>=2024",
        "mpi4py",
        "distributed>=2024.1",  # labeling on Dask workers (mdmonitor label --workers)
        "psutil",               # who holds a box's claim; memory before starting workers
        "scipy",                # error-map fits, metrics, the overlap check's k-d tree
    ],
    # xtb: GFN1-/GFN2-xTB as a reference calculator (tblite.ase:TBLite);
    # hpc: Dask workers started by SLURM, PBS... (dask-jobqueue), for `mdmonitor label --scheduler`;
    # test: pytest-xdist, the suite on two processes; vesin, the reference neighbour list the
    # tests and benchmarks check the aggregation against; import-linter, the layering of the package (.importlinter); tblite and
    # dask-jobqueue, the xTB and SLURM examples
    extras_require={"xtb": ["tblite>=0.4"],
                    "hpc": ["dask-jobqueue>=0.8"],
                    "test": ["pytest>=7", "pytest-xdist>=3", "uncertainty-toolbox==0.1.1", "vesin>=0.3",
                             "import-linter>=2.1", "tblite>=0.4", "dask-jobqueue>=0.8"]},
    entry_points={"console_scripts": ["mdmonitor = mdmonitor.cli:main"],
                  # the `lmp` console script adds this directory to LAMMPS_PLUGIN_PATH
                  "lammps.plugins": ["mdmonitor = mdmonitor.lammps.plugin:plugin_directory"]},
)
