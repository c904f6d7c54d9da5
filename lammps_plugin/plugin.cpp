/* The plugin file LAMMPS loads (mdmonitorplugin.so). It holds no torch code: it loads torch's
   libtorch_cpu.so with RTLD_DEEPBIND, then the styles (mdmonitor_styles.so, linked to torch)
   and lets them register.

   Why: liblammps.so of the pip wheel exports a reference BLAS (dgemm_, dgemv_, ddot_, ...).
   libtorch_cpu.so exports the same names from its MKL and calls them through the PLT, so had
   it been loaded as a dependency of the plugin, its calls would bind to liblammps's copies
   (the global scope, which holds liblammps under `lmp` and under Python's lammps(), comes
   first), and every float64 GEMM of the model would run the reference kernel. Loaded with
   RTLD_DEEPBIND, libtorch_cpu resolves its own symbols first. When torch is already in the
   process (Python imported it before), dlopen only returns it. */

#include "error.h"
#include "lammps.h"

#include <dlfcn.h>

using namespace LAMMPS_NS;

extern "C" void lammpsplugin_init(void *lmp, void *handle, void *regfunc)
{
  auto error = static_cast<LAMMPS *>(lmp)->error;
  // both found through this file's RUNPATH: torch's library directory, and $ORIGIN
  if (!dlopen("libtorch_cpu.so", RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND))
    error->all(FLERR, "mdmonitor plugin: cannot load torch: {}", dlerror());
  void *styles = dlopen("mdmonitor_styles.so", RTLD_NOW | RTLD_LOCAL);
  if (!styles) error->all(FLERR, "mdmonitor plugin: cannot load its styles: {}", dlerror());
  auto register_styles =
      (void (*)(void *, void *, void *)) dlsym(styles, "mdmonitor_register_styles");
  if (!register_styles)
    error->all(FLERR, "mdmonitor plugin: mdmonitor_styles.so has no mdmonitor_register_styles");
  register_styles(lmp, handle, regfunc);
}
