/* pair_style mdmonitor: see pair_mdmonitor.h and the README's LAMMPS section.

   The graph handed to the exported module (mdmonitor/lammps/export.py): nodes are the local
   atoms and every ghost atom within one edge of them, the images of one atom merged into one
   node (edges carry the cell shifts between images), local images into the local atom, so on one
   rank the nodes are the local atoms only; edges are all pairs within r_max into a local atom.
   On several ranks every layer updates the local atoms; before the next layer reads them, the
   ghost nodes' features come from their owners (torch.ops.mdmonitor.exchange, registered here:
   forward communication), and in the backward pass the gradients of those features go back to
   the owners (reverse communication) before the owners' earlier layers. With chunks on several
   ranks (each chunk a slab of the local atoms, whose halo other chunks' features cannot fill in
   time) the graph reaches num_interactions edges instead, with the edges into the atoms fewer
   edges away, and the model evaluates each layer where it reaches a local energy (the halos
   again).
   Forces on ghost atoms go back to their owners through LAMMPS's reverse communication
   (newton_pair on), and so do the module's force rows (a committee's member forces, the force
   LLPR's feature derivatives or sampled force sets) before the module's force_uncertainty
   reduces them. */

#include "pair_mdmonitor.h"

#include "atom.h"
#include "comm.h"
#include "domain.h"
#include "error.h"
#include "force.h"
#include "memory.h"
#include "neigh_list.h"
#include "neighbor.h"
#include "update.h"

#include "elements.h"
#include "freed_memory.h"

#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/jit/runtime/graph_executor.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <unordered_map>

using namespace LAMMPS_NS;

PairMDMonitor *PairMDMonitor::exchanging = nullptr;

namespace {

/* exchange_features with exchange_gradients as its backward pass */

struct Exchange : public torch::autograd::Function<Exchange> {
  static torch::Tensor forward(torch::autograd::AutogradContext *, const torch::Tensor &features)
  {
    return PairMDMonitor::exchanging->exchange_features(features);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext *,
                                                 torch::autograd::variable_list gradients)
  {
    return {PairMDMonitor::exchanging->exchange_gradients(gradients[0])};
  }
};

/* torch.ops.mdmonitor.exchange: with the pair style whose model call runs, else a copy (one
   rank, chunks) */

torch::Tensor exchange(const torch::Tensor &features)
{
  return PairMDMonitor::exchanging ? Exchange::apply(features) : features.clone();
}

/* registers torch.ops.mdmonitor.exchange once, its schema too unless mdmonitor's Python,
   imported first in this process, defined it */

void register_exchange()
{
  static torch::Library library(torch::Library::FRAGMENT, "mdmonitor", std::nullopt, __FILE__,
                                __LINE__);
  static bool registered = false;
  if (registered) return;
  if (!c10::Dispatcher::singleton().findSchema({"mdmonitor::exchange", ""}))
    library.def("exchange(Tensor features) -> Tensor");
  library.impl("exchange", c10::DispatchKey::CompositeImplicitAutograd, &exchange);
  registered = true;
}

}    // namespace

PairMDMonitor::PairMDMonitor(LAMMPS *lmp) :
    Pair(lmp), r_max(0.0), num_interactions(0), exchange_width(0), num_members(0),
    num_force_rows(0), driven(false), on_request(false), uncertainty_flag(0),
    uncertainty_step(-1), chunk(0), with_ghosts(false),
    graph_depth(1), with_exchange(false), nmax(0), uncertainty(nullptr), force_rows(nullptr),
    features(nullptr), comm_rows(nullptr), comm_columns(0)
{
  register_exchange();
  single_enable = 0;
  restartinfo = 0;
  one_coeff = 1;
  manybody_flag = 1;
  no_virial_fdotr_compute = 1;
  centroidstressflag = CENTROID_NOTAVAIL;
  if (mdmonitor::keep_freed_memory() && comm->me == 0)
    utils::logmesg(lmp, "pair_style mdmonitor: malloc keeps freed memory for the next steps "
                   "({}=0 turns this off)\n", mdmonitor::KEEP_FREED_MEMORY_SWITCH);
}

PairMDMonitor::~PairMDMonitor()
{
  memory->destroy(uncertainty);
  memory->destroy(force_rows);
  memory->destroy(features);
  if (allocated) {
    memory->destroy(setflag);
    memory->destroy(cutsq);
    memory->destroy(cutghost);
  }
}

/* the string values of every `"key": "..."` in JSON text, ";"-joined (escapes \" and \\) */

static std::string join_json_strings(const std::string &json, const std::string &key)
{
  const std::string opening = "\"" + key + "\": \"";
  std::string joined;
  for (auto at = json.find(opening); at != std::string::npos; at = json.find(opening, at)) {
    if (!joined.empty()) joined += ';';
    for (at += opening.size(); at < json.size() && json[at] != '"'; ++at) {
      if (json[at] == '\\') ++at;
      if (at < json.size()) joined += json[at];
    }
  }
  return joined;
}

/* pair_style mdmonitor FILE [chunk N] */

void PairMDMonitor::settings(int narg, char **arg)
{
  if (narg < 1) utils::missing_cmd_args(FLERR, "pair_style mdmonitor", error);
  model_file = arg[0];
  for (int iarg = 1; iarg < narg; iarg += 2) {
    if (strcmp(arg[iarg], "chunk") != 0)
      error->all(FLERR, "Illegal pair_style mdmonitor command: unknown keyword '{}' "
                 "(expected: chunk)", arg[iarg]);
    if (iarg + 1 >= narg) utils::missing_cmd_args(FLERR, "pair_style mdmonitor chunk", error);
    chunk = utils::inumeric(FLERR, arg[iarg + 1], false, lmp);
    if (chunk < 0)
      error->all(FLERR, "Illegal pair_style mdmonitor command: chunk must be 0 (all atoms at "
                 "once) or a number of atoms, not {}", chunk);
  }

  if (!platform::file_is_readable(model_file))
    error->all(FLERR, "pair_style mdmonitor: cannot read model file '{}'; write it with "
               "`mdmonitor export-lammps`", model_file);
  try {
    torch::jit::ExtraFilesMap extra{{"mdmonitor.json", ""}};
    model = torch::jit::load(model_file, torch::kCPU, extra);
    model_files = join_json_strings(extra["mdmonitor.json"], "file");
    model_sha256 = join_json_strings(extra["mdmonitor.json"], "sha256");
  } catch (const c10::Error &err) {
    error->all(FLERR, "pair_style mdmonitor: '{}' is not a TorchScript file from `mdmonitor "
               "export-lammps`: {}", model_file, err.what_without_backtrace());
  }
  if (!model.hasattr("format_version") || model.attr("format_version").toInt() != 2)
    error->all(FLERR, "pair_style mdmonitor: '{}' was not written by this version of `mdmonitor "
               "export-lammps` (format 2); export the estimator again", model_file);
  model.eval();
  elements.clear();
  for (const auto &symbol : model.attr("elements").toListRef())
    elements.push_back(symbol.toStringRef());
  r_max = model.attr("r_max").toDouble();
  num_interactions = model.attr("num_interactions").toInt();
  exchange_width = model.attr("exchange_width").toInt();
  num_members = model.attr("num_members").toInt();
  num_force_rows = model.attr("num_force_rows").toInt();
  const std::string driver = model.hasattr("driver") ? model.attr("driver").toStringRef() : "";
  driven = !driver.empty() && driver != "mean";
  on_request = model.attr("uncertainty_on_request").toBool();
  // the per-atom arrays, sized for this model at the next step
  memory->destroy(uncertainty);
  memory->destroy(force_rows);
  memory->destroy(features);
  nmax = 0;
  std::string paid;
  if (driven)
    paid = "; dynamics driven by " + driver + ", members evaluated only on steps whose "
           "uncertainty a fix reads";
  else if (on_request)
    paid = "; uncertainty computed only on steps a fix reads it";
  if (comm->me == 0)
    utils::logmesg(lmp, "pair_style mdmonitor: {} estimator from {}, {} member(s), elements {}, "
                   "r_max {} A, {} interactions, uncertainty in {}{}\n",
                   model.attr("estimator").toStringRef(), model_file, num_members,
                   utils::join_words(elements, " "), r_max, num_interactions,
                   model.attr("uncertainty_unit").toStringRef(), paid);
}

/* pair_coeff * * Element1 Element2 ... (one element of the model per atom type) */

void PairMDMonitor::coeff(int narg, char **arg)
{
  if (!allocated) allocate();
  const int ntypes = atom->ntypes;
  if (narg != 2 + ntypes || strcmp(arg[0], "*") != 0 || strcmp(arg[1], "*") != 0)
    error->all(FLERR, "Incorrect args for pair_coeff: pair_style mdmonitor needs "
               "'pair_coeff * * E1 ... E{}', one element per atom type", ntypes);
  species_of_type.assign(ntypes + 1, -1);
  type_elements.assign(ntypes + 1, "");
  for (int type = 1; type <= ntypes; ++type) {
    const std::string symbol = arg[1 + type];
    type_elements[type] = symbol;
    for (int s = 0; s < (int) elements.size(); ++s)
      if (elements[s] == symbol) species_of_type[type] = s;
    if (species_of_type[type] < 0)
      error->all(FLERR, "pair_coeff: element '{}' (atom type {}) is not known to model '{}' "
                 "(its elements: {})", symbol, type, model_file, utils::join_words(elements, " "));
  }
  for (int i = 1; i <= ntypes; ++i)
    for (int j = i; j <= ntypes; ++j) setflag[i][j] = 1;
}

/* a warning for each atom type whose mass is more than MASS_TOLERANCE off the standard mass
   of the element pair_coeff maps it to: most likely the elements are in the wrong order */

void PairMDMonitor::check_type_masses()
{
  if (!atom->mass) return;    // per-atom masses
  for (int type = 1; type <= atom->ntypes; ++type) {
    if (!atom->mass_setflag[type]) continue;
    const double mass = atom->mass[type];
    const double standard = mdmonitor::standard_mass(mdmonitor::atomic_number(type_elements[type]));
    if (std::fabs(mass - standard) > MASS_TOLERANCE * standard)
      error->warning(FLERR, "pair_style mdmonitor: atom type {} has mass {} but pair_coeff maps "
                     "it to {} (standard mass {}, more than {}% off; the nearest standard mass is "
                     "{}'s): check the order of the elements in pair_coeff", type, mass,
                     type_elements[type], standard, 100 * MASS_TOLERANCE,
                     mdmonitor::element_symbol(mdmonitor::nearest_element_by_mass(mass)));
  }
}

void PairMDMonitor::allocate()
{
  allocated = 1;
  const int n = atom->ntypes + 1;
  memory->create(setflag, n, n, "pair:setflag");
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j) setflag[i][j] = 0;
  memory->create(cutsq, n, n, "pair:cutsq");
  memory->create(cutghost, n, n, "pair:cutghost");
}

void PairMDMonitor::init_style()
{
  if (strcmp(update->unit_style, "metal") != 0)
    error->all(FLERR, "pair_style mdmonitor requires 'units metal' (the model works in eV and A)");
  if (!atom->tag_enable) error->all(FLERR, "pair_style mdmonitor requires atom IDs");
  if (comm->me == 0) check_type_masses();
  // on one rank every image of an atom is the atom itself: the graph has no ghost nodes
  with_ghosts = comm->nprocs > 1;
  // on several ranks every layer updates the local atoms only and takes the ghost atoms' node
  // features from their owners, so the graph ends one edge beyond the local atoms; a chunk's
  // halo cannot wait for features other chunks compute later, so with chunks the graph holds
  // every atom within num_interactions edges and the model evaluates the halo's layers again
  graph_depth = chunk > 0 && comm->nprocs > 1 ? num_interactions : 1;
  with_exchange = comm->nprocs > 1 && graph_depth == 1 && exchange_width > 0;
  ghostneigh = graph_depth > 1 ? 1 : 0;
  comm_forward = with_exchange ? exchange_width : 0;
  comm_reverse = with_ghosts ? std::max(3 * num_force_rows, comm_forward) : 0;

  if (with_ghosts && !force->newton_pair)
    error->all(FLERR, "pair_style mdmonitor with ghost atoms requires newton_pair on");
  if (graph_depth > 1) {
    // local energies depend on atoms num_interactions x r_max away, and atoms move up to
    // half the skin each way between neighbour-list builds
    const double needed = num_interactions * r_max + neighbor->skin;
    if (comm->cutghostuser == 0.0) {
      comm->cutghostuser = needed;
      if (comm->me == 0)
        utils::logmesg(lmp, "pair_style mdmonitor: communication cutoff set to {} A "
                       "(num_interactions x r_max + skin, for chunks on several ranks)\n",
                       needed);
    } else if (comm->cutghostuser < needed) {
      error->all(FLERR, "pair_style mdmonitor: communication cutoff {} A is too small; chunks "
                 "on several ranks need ghost atoms out to num_interactions x r_max + skin = "
                 "{} x {} + {} = {} A: use 'comm_modify cutoff {}'", comm->cutghostuser,
                 num_interactions, r_max, neighbor->skin, needed, needed);
    }
  }
  neighbor->add_request(this, NeighConst::REQ_FULL | (ghostneigh ? NeighConst::REQ_GHOST : 0));
}

double PairMDMonitor::init_one(int i, int j)
{
  cutghost[i][j] = cutghost[j][i] = r_max;
  return r_max;
}

void PairMDMonitor::grow_peratom()
{
  if (atom->nmax <= nmax) return;
  nmax = atom->nmax;
  memory->destroy(uncertainty);
  memory->create(uncertainty, nmax, "pair:uncertainty");
  if (num_force_rows) {    // summed over chunks, and over ghost images with comm_reverse
    memory->destroy(force_rows);
    memory->create(force_rows, nmax, 3 * num_force_rows, "pair:force_rows");
  }
  if (with_exchange) {
    memory->destroy(features);
    memory->create(features, nmax, exchange_width, "pair:features");
  }
}

/* offset of an atom's image at x from its image at origin, in cell vectors (lamda = h_inv dx,
   h_inv upper triangular in LAMMPS's Voigt order), rounded to whole cells */

static void image_offset(const double *h_inv, const double *x, const double *origin,
                         double *offset)
{
  const double dx[3] = {x[0] - origin[0], x[1] - origin[1], x[2] - origin[2]};
  offset[0] = std::nearbyint(h_inv[0] * dx[0] + h_inv[5] * dx[1] + h_inv[4] * dx[2]);
  offset[1] = std::nearbyint(h_inv[1] * dx[1] + h_inv[3] * dx[2]);
  offset[2] = std::nearbyint(h_inv[2] * dx[2]);
}

/* the graph: breadth-first from the local atoms over edges shorter than r_max, to graph_depth
   edges from them, with the edges into the atoms fewer edges away.
   All images of one atom (one tag) are one node, at the first image reached (a local atom is
   its own first image); an edge from another image carries the integer cell shift between the
   two. So a dimension with one rank leaves no ghost node (one rank: the local atoms with edges
   to their periodic images), and an atom seen through several images is evaluated once. */

void PairMDMonitor::build_graph()
{
  const int nlocal = atom->nlocal, nall = nlocal + atom->nghost;
  double **x = atom->x;
  const tagint *tag = atom->tag;
  const double *h_inv = domain->h_inv;
  std::unordered_map<tagint, int> node_of_tag(2 * nall);
  graph.node_atom.resize(nlocal);
  for (int i = 0; i < nlocal; ++i) {
    graph.node_atom[i] = i;
    node_of_tag[tag[i]] = i;
  }
  graph.n_local = nlocal;
  graph.senders.clear();
  graph.receivers.clear();
  graph.unit_shifts.clear();
  const double cutsq_model = r_max * r_max;
  int begin = 0, end = nlocal;    // nodes of the current layer
  for (int layer = 0; layer < graph_depth; ++layer) {
    for (int k = begin; k < end; ++k) {
      const int a = graph.node_atom[k];
      const int *jlist = list->firstneigh[a];
      for (int jj = 0; jj < list->numneigh[a]; ++jj) {
        const int b = jlist[jj] & NEIGHMASK;
        const double dx = x[b][0] - x[a][0], dy = x[b][1] - x[a][1], dz = x[b][2] - x[a][2];
        if (dx * dx + dy * dy + dz * dz >= cutsq_model) continue;
        auto found = node_of_tag.emplace(tag[b], (int) graph.node_atom.size());
        if (found.second) graph.node_atom.push_back(b);
        const int node = found.first->second, image = graph.node_atom[node];
        // x_a - x_b = x_a - x_image - (x_b - x_image): minus b's offset from the node's image
        double offset[3];
        image_offset(h_inv, x[b], x[image], offset);
        for (double o : offset) graph.unit_shifts.push_back(-o);
        graph.senders.push_back(node);
        graph.receivers.push_back(k);
      }
    }
    begin = end;
    end = (int) graph.node_atom.size();
  }
}

/* the atoms and edges each layer evaluated on each rank (the model's "graph_sizes"), in the log
   at the first step of a run: how far the graph of ghost atoms exceeds the local atoms */

void PairMDMonitor::log_graph_sizes(const torch::Tensor &sizes)
{
  const int columns = (int) sizes.size(1);
  std::vector<long> mine{(long) atom->nlocal, (long) atom->nghost,
                         (long) graph.node_atom.size()};
  auto s = sizes.accessor<int64_t, 2>();
  for (int c = 0; c < columns; ++c) {
    mine.push_back((long) s[0][c]);
    mine.push_back((long) s[1][c]);
  }
  std::vector<long> all(mine.size() * comm->nprocs);
  MPI_Gather(mine.data(), (int) mine.size(), MPI_LONG, all.data(), (int) mine.size(), MPI_LONG,
             0, world);
  if (comm->me != 0) return;
  std::string text = "pair_style mdmonitor: graph per rank (local atoms, LAMMPS ghost atoms, graph "
                     "atoms; atoms and edges embedded, then updated by layer 1.." +
                     std::to_string(columns - 1) + ")\n";
  for (int rank = 0; rank < comm->nprocs; ++rank) {
    const long *r = all.data() + rank * mine.size();
    text += fmt::format("  rank {}: {} local, {} ghost, {} in graph; embedded {} / {}", rank, r[0],
                        r[1], r[2], r[3], r[4]);
    for (int c = 1; c < columns; ++c)
      text += fmt::format("; layer {} {} / {}", c, r[3 + 2 * c], r[4 + 2 * c]);
    text += "\n";
  }
  utils::logmesg(lmp, text);
}

/* the piece of the graph that gives the energies of the local atoms `atoms`: them first, then
   breadth-first over the edges into them the nodes within num_interactions edges, with the
   edges into the nodes fewer than num_interactions edges away (the model prunes further) */

void PairMDMonitor::build_piece(const std::vector<int> &atoms)
{
  piece.node_atom.clear();
  piece.senders.clear();
  piece.receivers.clear();
  piece.unit_shifts.clear();
  std::vector<int> nodes(atoms);    // the piece's nodes as graph nodes (a local atom is its node)
  for (int k = 0; k < (int) nodes.size(); ++k) piece_node[nodes[k]] = k;
  piece.n_local = (int) atoms.size();
  int begin = 0, end = piece.n_local;
  for (int layer = 0; layer < num_interactions; ++layer) {
    for (int k = begin; k < end; ++k) {
      for (int at = incoming_first[nodes[k]]; at < incoming_first[nodes[k] + 1]; ++at) {
        const int e = incoming[at], sender = (int) graph.senders[e];
        if (piece_node[sender] < 0) {
          piece_node[sender] = (int) nodes.size();
          nodes.push_back(sender);
        }
        piece.senders.push_back(piece_node[sender]);
        piece.receivers.push_back(k);
        piece.unit_shifts.insert(piece.unit_shifts.end(), &graph.unit_shifts[3 * e],
                                 &graph.unit_shifts[3 * e] + 3);
      }
    }
    begin = end;
    end = (int) nodes.size();
  }
  for (int node : nodes) {
    piece.node_atom.push_back(graph.node_atom[node]);
    piece_node[node] = -1;
  }
}

/* the model on graph `g`: its forces, energies and virial added to LAMMPS's, its per-atom
   uncertainty to `uncertainty` or its force rows to `force_rows` (its local atoms then marked in
   `from_rows`), its graph sizes added to `sizes` */

void PairMDMonitor::evaluate(const Graph &g, bool with_uncertainty, torch::Tensor &sizes)
{
  const int64_t n_nodes = g.node_atom.size(), n_edges = g.senders.size();
  auto as_double = torch::TensorOptions().dtype(torch::kFloat64);
  auto as_long = torch::TensorOptions().dtype(torch::kInt64);
  torch::Tensor positions = torch::empty({n_nodes, 3}, as_double);
  torch::Tensor species = torch::empty({n_nodes}, as_long);
  double **x = atom->x;
  const int *type = atom->type;
  auto p = positions.accessor<double, 2>();
  auto s = species.accessor<int64_t, 1>();
  for (int64_t k = 0; k < n_nodes; ++k) {
    const int i = g.node_atom[k];
    for (int d = 0; d < 3; ++d) p[k][d] = x[i][d];
    s[k] = species_of_type[type[i]];
  }
  torch::Tensor edge_index = torch::empty({2, n_edges}, as_long);
  std::copy(g.senders.begin(), g.senders.end(), edge_index.data_ptr<int64_t>());
  std::copy(g.receivers.begin(), g.receivers.end(), edge_index.data_ptr<int64_t>() + n_edges);
  torch::Tensor shifts = torch::zeros({n_edges, 3}, as_double);
  torch::Tensor cell = torch::empty({3, 3}, as_double);
  std::copy(g.unit_shifts.begin(), g.unit_shifts.end(), shifts.data_ptr<double>());
  const double *h = domain->h;    // rows a, b, c of the LAMMPS cell
  const double rows[9] = {h[0], 0.0, 0.0, h[5], h[1], 0.0, h[4], h[3], h[2]};
  std::copy(rows, rows + 9, cell.data_ptr<double>());

  // TorchScript's profiling executor re-optimises for every new graph size, which costs
  // seconds per step, and was slower than plain execution even once warm (measured)
  torch::jit::GraphOptimizerEnabledGuard unoptimized(false);
  std::vector<torch::jit::IValue> inputs{positions, edge_index, shifts, cell, species,
                                         (int64_t) g.n_local, (bool) vflag_global};
  // a driven committee evaluates its members, the LLPR its last-layer features, only on the
  // steps whose uncertainty is read; the other steps run `drive`, the model of the dynamics
  exchanging = with_exchange ? this : nullptr;
  const auto out = (with_uncertainty ? model.forward(inputs)
                                     : model.get_method("drive")(inputs)).toGenericDict();
  exchanging = nullptr;
  if (out.contains("graph_sizes")) {
    const torch::Tensor found = out.at("graph_sizes").toTensor();
    sizes = sizes.defined() ? sizes + found : found.clone();
  }

  torch::Tensor forces = out.at("forces").toTensor();
  if (!torch::isfinite(forces).all().item<bool>())
    error->one(FLERR, "pair_style mdmonitor: the model returned NaN or inf forces at step {}",
               update->ntimestep);
  auto fk = forces.accessor<double, 2>();
  double **f = atom->f;
  for (int64_t k = 0; k < n_nodes; ++k)
    for (int d = 0; d < 3; ++d) f[g.node_atom[k]][d] += fk[k][d];

  if (eflag_global) eng_vdwl += out.at("energy").toTensor().item<double>();
  if (eflag_atom) {
    const torch::Tensor energies = out.at("atomic_energies").toTensor();
    auto e = energies.accessor<double, 1>();
    for (int k = 0; k < g.n_local; ++k) eatom[g.node_atom[k]] += e[k];
  }
  if (vflag_global) {
    const torch::Tensor model_virial = out.at("virial").toTensor();
    auto v = model_virial.accessor<double, 1>();
    for (int k = 0; k < 6; ++k) virial[k] += v[k];
  }
  if (!with_uncertainty) return;
  if (out.contains("atomic_uncertainty")) {    // (complete: no rows of other nodes to add)
    const torch::Tensor atomic = out.at("atomic_uncertainty").toTensor();
    auto a = atomic.accessor<double, 1>();
    for (int k = 0; k < g.n_local; ++k) uncertainty[g.node_atom[k]] = a[k];
    return;
  }
  // a row (a member's force, a feature derivative) on an atom is complete only with the rows
  // of its other nodes (ghost images, other chunks' halos) added, as the forces are
  const torch::Tensor found =
      out.at(out.contains("member_forces") ? "member_forces" : "force_rows").toTensor();
  auto row = found.accessor<double, 3>();
  for (int64_t k = 0; k < n_nodes; ++k)
    for (int m = 0; m < num_force_rows; ++m)
      for (int d = 0; d < 3; ++d) force_rows[g.node_atom[k]][3 * m + d] += row[m][k][d];
  for (int k = 0; k < g.n_local; ++k) from_rows[g.node_atom[k]] = 1;
}

void PairMDMonitor::compute(int eflag, int vflag)
{
  ev_init(eflag, vflag);
  if (vflag_atom)
    error->all(FLERR, "pair_style mdmonitor does not compute per-atom virials");
  grow_peratom();
  const int nlocal = atom->nlocal, nall = nlocal + atom->nghost;
  build_graph();
  const bool with_uncertainty = !on_request || uncertainty_flag;
  if (with_uncertainty && num_force_rows)
    for (int i = 0; i < nall; ++i)
      for (int c = 0; c < 3 * num_force_rows; ++c) force_rows[i][c] = 0.0;

  torch::Tensor sizes;
  // atoms whose uncertainty comes from the summed rows; a chunk without halo (atoms out of
  // reach of all others) gives its atoms' uncertainty whole while the other chunks give rows
  from_rows.assign(nlocal, 0);
  const int pieces = chunk > 0 ? (nlocal + chunk - 1) / chunk : 1;
  if (pieces <= 1) {
    evaluate(graph, with_uncertainty, sizes);
  } else {
    // the graph's edges by receiver
    const int n_nodes = (int) graph.node_atom.size();
    incoming_first.assign(n_nodes + 1, 0);
    for (int64_t r : graph.receivers) ++incoming_first[r + 1];
    for (int k = 0; k < n_nodes; ++k) incoming_first[k + 1] += incoming_first[k];
    incoming.resize(graph.receivers.size());
    std::vector<int> next(incoming_first.begin(), incoming_first.end() - 1);
    for (int e = 0; e < (int) graph.receivers.size(); ++e) incoming[next[graph.receivers[e]]++] = e;
    piece_node.assign(n_nodes, -1);
    // slabs along the rank's longest side: the fewest halo atoms per chunk
    int axis = 0;
    for (int d = 1; d < 3; ++d)
      if (domain->subhi[d] - domain->sublo[d] > domain->subhi[axis] - domain->sublo[axis]) axis = d;
    std::vector<int> order(nlocal);
    for (int i = 0; i < nlocal; ++i) order[i] = i;
    double **x = atom->x;
    std::sort(order.begin(), order.end(),
              [x, axis](int a, int b) { return x[a][axis] < x[b][axis]; });
    for (int k = 0; k < pieces; ++k) {
      build_piece(std::vector<int>(order.begin() + (int64_t) nlocal * k / pieces,
                                   order.begin() + (int64_t) nlocal * (k + 1) / pieces));
      evaluate(piece, with_uncertainty, sizes);
    }
  }
  if (update->ntimestep == update->firststep && update->setupflag && sizes.defined())
    log_graph_sizes(sizes);

  if (!with_uncertainty) {    // not computed at this step: never an earlier step's values
    for (int i = 0; i < nlocal; ++i) uncertainty[i] = std::numeric_limits<double>::quiet_NaN();
    return;
  }
  if (with_ghosts && num_force_rows) {    // (on every rank: it exchanges with neighbours)
    comm_rows = force_rows;
    comm_columns = 3 * num_force_rows;
    comm->reverse_comm(this, comm_columns);
  }
  if (std::find(from_rows.begin(), from_rows.end(), 1) != from_rows.end()) {
    auto as_double = torch::TensorOptions().dtype(torch::kFloat64);
    torch::Tensor summed = torch::empty({num_force_rows, nlocal, 3}, as_double);
    auto sm = summed.accessor<double, 3>();
    for (int m = 0; m < num_force_rows; ++m)
      for (int i = 0; i < nlocal; ++i)
        for (int d = 0; d < 3; ++d) sm[m][i][d] = force_rows[i][3 * m + d];
    const torch::Tensor atomic = model.run_method("force_uncertainty", summed).toTensor();
    auto a = atomic.accessor<double, 1>();
    for (int i = 0; i < nlocal; ++i)
      if (from_rows[i]) uncertainty[i] = a[i];
  }
  uncertainty_step = update->ntimestep;
}

void *PairMDMonitor::extract(const char *name, int &dim)
{
  dim = 0;
  if (strcmp(name, "type_elements") == 0) return (void *) &type_elements;
  if (strcmp(name, "model_files") == 0) return (void *) &model_files;
  if (strcmp(name, "model_sha256") == 0) return (void *) &model_sha256;
  if (strcmp(name, "uncertainty_flag") == 0) return (void *) &uncertainty_flag;
  if (strcmp(name, "uncertainty_step") == 0) return (void *) &uncertainty_step;
  return nullptr;
}

void *PairMDMonitor::extract_peratom(const char *name, int &ncol)
{
  if (strcmp(name, "uncertainty") == 0) {
    ncol = 0;
    return (void *) uncertainty;
  }
  return nullptr;
}

/* the communication of comm_columns values per atom of comm_rows: forward, owners' values to
   their ghost atoms; reverse, ghost atoms' values added to their owners' */

int PairMDMonitor::pack_forward_comm(int n, int *list, double *buf, int, int *)
{
  int m = 0;
  for (int k = 0; k < n; ++k)
    for (int c = 0; c < comm_columns; ++c) buf[m++] = comm_rows[list[k]][c];
  return m;
}

void PairMDMonitor::unpack_forward_comm(int n, int first, double *buf)
{
  int m = 0;
  for (int i = first; i < first + n; ++i)
    for (int c = 0; c < comm_columns; ++c) comm_rows[i][c] = buf[m++];
}

int PairMDMonitor::pack_reverse_comm(int n, int first, double *buf)
{
  int m = 0;
  for (int i = first; i < first + n; ++i)
    for (int c = 0; c < comm_columns; ++c) buf[m++] = comm_rows[i][c];
  return m;
}

void PairMDMonitor::unpack_reverse_comm(int n, int *list, double *buf)
{
  int m = 0;
  for (int k = 0; k < n; ++k)
    for (int c = 0; c < comm_columns; ++c) comm_rows[list[k]][c] += buf[m++];
}

/* node features (graph nodes x width, the rows of ghost nodes unset) with the ghost nodes' rows
   from their owners: the local atoms' rows to `features`, forward communication, the ghost
   atoms' rows back */

torch::Tensor PairMDMonitor::exchange_features(const torch::Tensor &node_features)
{
  torch::Tensor filled = node_features.contiguous().clone();
  const int width = (int) filled.size(1);
  const int64_t n_nodes = filled.size(0);
  if (n_nodes != (int64_t) graph.node_atom.size() || width > exchange_width)
    error->one(FLERR, "pair_style mdmonitor: the model exchanged {} x {} node features on a "
               "graph of {} atoms (at most {} per atom); export the estimator again", n_nodes,
               width, graph.node_atom.size(), exchange_width);
  double *rows = filled.data_ptr<double>();
  for (int k = 0; k < graph.n_local; ++k)
    std::copy(rows + k * width, rows + (k + 1) * width, features[graph.node_atom[k]]);
  comm_rows = features;
  comm_columns = width;
  comm->forward_comm(this, width);
  for (int64_t k = graph.n_local; k < n_nodes; ++k)
    std::copy(features[graph.node_atom[k]], features[graph.node_atom[k]] + width,
              rows + k * width);
  return filled;
}

/* the backward pass of exchange_features: the gradients of the ghost nodes' rows added to their
   owners' rows (reverse communication), the ghost rows then zero */

torch::Tensor PairMDMonitor::exchange_gradients(const torch::Tensor &node_gradients)
{
  torch::Tensor summed = node_gradients.contiguous().clone();
  const int width = (int) summed.size(1);
  const int64_t n_nodes = summed.size(0);
  double *rows = summed.data_ptr<double>();
  for (int i = 0; i < atom->nlocal + atom->nghost; ++i)
    std::fill(features[i], features[i] + width, 0.0);
  for (int64_t k = graph.n_local; k < n_nodes; ++k) {
    std::copy(rows + k * width, rows + (k + 1) * width, features[graph.node_atom[k]]);
    std::fill(rows + k * width, rows + (k + 1) * width, 0.0);
  }
  comm_rows = features;
  comm_columns = width;
  comm->reverse_comm(this, width);
  for (int k = 0; k < graph.n_local; ++k)
    for (int c = 0; c < width; ++c) rows[k * width + c] += features[graph.node_atom[k]][c];
  return summed;
}

double PairMDMonitor::memory_usage()
{
  const int exchanged = with_exchange ? exchange_width : 0;
  return Pair::memory_usage() +
      (double) nmax * (1 + 3 * num_force_rows + exchanged) * sizeof(double);
}
