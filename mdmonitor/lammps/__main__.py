"""`python -m mdmonitor.lammps build | path`: build and install the plugin, or print its file.

    python -m mdmonitor.lammps build     # configure, compile (-j2) and install the plugin
                                         # (--verbose: show CMake's and the compiler's output)
    python -m mdmonitor.lammps path      # print the plugin file, for `plugin load`
"""

import sys

from .plugin import build, plugin_path


def main(argv=None) -> int:
    command = (argv if argv is not None else sys.argv[1:]) or ["--help"]
    if command in (["build"], ["build", "--verbose"]):
        print(f"installed {build(verbose='--verbose' in command)}")
    elif command == ["path"]:
        print(plugin_path())
    else:
        print(__doc__)
        return 0 if command[0] in ("-h", "--help") else 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
