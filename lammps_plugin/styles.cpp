/* Registers pair_style mdmonitor and fix mdmonitor with LAMMPS; called by plugin.cpp once it
   has loaded torch with its own symbol scope. */

#include "fix_mdmonitor.h"
#include "lammpsplugin.h"
#include "pair_mdmonitor.h"

using namespace LAMMPS_NS;

static Pair *create_pair(LAMMPS *lmp)
{
  return new PairMDMonitor(lmp);
}

static Fix *create_fix(LAMMPS *lmp, int narg, char **arg)
{
  return new FixMDMonitor(lmp, narg, arg);
}

extern "C" void mdmonitor_register_styles(void *lmp, void *handle, void *regfunc)
{
  auto reg = (lammpsplugin_regfunc) regfunc;
  lammpsplugin_t plugin;
  plugin.version = LAMMPS_VERSION;
  plugin.author = "mdmonitor";
  plugin.handle = handle;

  plugin.style = "pair";
  plugin.name = "mdmonitor";
  plugin.info = "mdmonitor pair style: exported MACE committee or LLPR with per-atom uncertainty";
  plugin.creator.v1 = (lammpsplugin_factory1 *) &create_pair;
  (*reg)(&plugin, lmp);

  plugin.style = "fix";
  plugin.name = "mdmonitor";
  plugin.info = "mdmonitor fix: spatially aggregated per-atom uncertainty";
  plugin.creator.v2 = (lammpsplugin_factory2 *) &create_fix;
  (*reg)(&plugin, lmp);
}
