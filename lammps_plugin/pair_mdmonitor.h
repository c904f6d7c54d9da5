/* pair_style mdmonitor FILE [chunk N]
   Energies, forces and virial from an estimator exported by `mdmonitor export-lammps`
   (committee mean or single LLPR model), and its per-atom uncertainty (a committee's force
   spread, the LLPR's scale / sqrt(LPR) or, for its force target, the posterior force spread),
   available through extract_peratom("uncertainty") to fix mdmonitor and fix pair;
   extract("type_elements") (std::vector<std::string>, element of each type, 1-based),
   extract("model_files") and extract("model_sha256") (std::string, ";"-joined, from the file's
   mdmonitor.json) to fix mdmonitor's box extraction. Units metal (eV, A). An atom type whose
   mass is more than 1% off the standard mass of its element gets a warning (elements in the
   wrong order in pair_coeff).
   A committee exported with a driver (`mdmonitor export-lammps --drive ...`) gives the driver's
   energies, forces and virial on every step and evaluates its members only on the steps whose
   uncertainty is asked for through the trigger extract("uncertainty_flag") (int, set to 1
   before the force call, as fix mdmonitor does on its N-th steps and fix pair with trigger 1);
   an LLPR likewise computes its last-layer features and LPR (or, for the force target, their
   position derivatives) only then (files whose "uncertainty_on_request" is true; see
   mdmonitor/lammps/export.py). On the other steps the per-atom uncertainty is NaN.
   extract("uncertainty_step") (bigint) is the step the uncertainty was last computed at
   (-1: never).
   On several ranks each message-passing layer updates the rank's own atoms, and the node
   features of the ghost atoms within r_max come from their owners (forward communication;
   their gradients go back by reverse communication).
   chunk N (0, the default: all at once) evaluates the model on at most N of a rank's atoms per
   call, slabs along the rank's longest side, each with the atoms within num_interactions edges
   of it: the same numbers, the memory of a call bounded (MACE keeps about 10 kB per edge, 0.2
   MB per atom of fcc Cu, for its backward pass), for the price of evaluating the slabs' halos
   again; on several ranks the halos then reach into the ghost atoms (out to num_interactions
   x r_max + skin) instead of exchanging their features, which other chunks compute later. */

#ifndef LMP_PAIR_MDMONITOR_H
#define LMP_PAIR_MDMONITOR_H

#include "pair.h"

#include <torch/script.h>

#include <string>
#include <vector>

namespace LAMMPS_NS {

class PairMDMonitor : public Pair {
 public:
  PairMDMonitor(class LAMMPS *);
  ~PairMDMonitor() override;
  void compute(int, int) override;
  void settings(int, char **) override;
  void coeff(int, char **) override;
  void init_style() override;
  double init_one(int, int) override;
  void *extract(const char *, int &) override;
  void *extract_peratom(const char *, int &) override;
  int pack_forward_comm(int, int *, double *, int, int *) override;
  void unpack_forward_comm(int, int, double *) override;
  int pack_reverse_comm(int, int, double *) override;
  void unpack_reverse_comm(int, int *, double *) override;
  double memory_usage() override;

  // torch.ops.mdmonitor.exchange (mdmonitor/lammps/pruned_mace.py) during this pair style's
  // model call on several ranks: the ghost rows of node features (graph nodes x width) from
  // their owners, and back, the ghost rows' gradients added to their owners' rows
  static PairMDMonitor *exchanging;
  torch::Tensor exchange_features(const torch::Tensor &node_features);
  torch::Tensor exchange_gradients(const torch::Tensor &node_gradients);

 protected:
  static constexpr double MASS_TOLERANCE = 0.01;    // relative, for the type masses

  torch::jit::Module model;
  std::string model_file;
  std::vector<std::string> elements;    // model species, in the model's order
  double r_max;                         // model cutoff (A)
  int num_interactions;                 // message-passing layers
  int exchange_width;                   // most node features per atom a layer hands on
  int num_members;                      // committee members (1 for LLPR)
  int num_force_rows;                   // per-atom 3-vectors reverse-summed before the spread
  bool driven;                          // committee with a driver: members only when asked
  bool on_request;                      // uncertainty only when asked (`drive` otherwise)
  int uncertainty_flag;                 // trigger: the uncertainty is read after this step
  bigint uncertainty_step;              // step of the values in `uncertainty` (-1: none)
  int chunk;                            // chunk keyword: most local atoms per model call
  bool with_ghosts;                     // graph with ghost nodes (several ranks)
  int graph_depth;                      // edges from the local atoms to the graph's last atoms
  bool with_exchange;                   // ghost atoms' node features from their owners
  std::vector<int64_t> species_of_type;    // model species of each atom type (1-based)
  std::vector<std::string> type_elements;  // element of each atom type (1-based)
  std::string model_files, model_sha256;   // the MACE files behind the model, ";"-joined

  int nmax;                 // rows of the per-atom arrays
  double *uncertainty;      // per-atom uncertainty of the local atoms
  double **force_rows;      // the module's force rows, 3 per row, reverse-summed
  double **features;        // node features or their gradients, exchange_width per atom
  double **comm_rows;       // the array the pack/unpack functions move ...
  int comm_columns;         // ... and its values per atom

  // a graph the model evaluates: node k is atom node_atom[k], nodes 0..n_local-1 the atoms whose
  // energies count; edge e goes senders[e] -> receivers[e]
  struct Graph {
    std::vector<int> node_atom;
    std::vector<int64_t> senders, receivers;
    std::vector<double> unit_shifts;    // per edge, in cell vectors
    int n_local = 0;
  };
  Graph graph;    // of all local atoms at the current step
  Graph piece;    // of one chunk of them
  std::vector<int> incoming_first, incoming;    // graph's edges by receiver (CSR)
  std::vector<int> piece_node;                  // graph node -> piece node (-1: none)
  std::vector<char> from_rows;    // local atom: its uncertainty from the summed rows

  void allocate();
  void check_type_masses();
  void grow_peratom();
  void build_graph();
  void build_piece(const std::vector<int> &atoms);
  void evaluate(const Graph &g, bool with_uncertainty, torch::Tensor &sizes);
  void log_graph_sizes(const torch::Tensor &sizes);
};

}    // namespace LAMMPS_NS

#endif
