/* fix ID group mdmonitor N cutoff R [threshold T] [source pair|c_ID|c_ID[k]|f_ID|f_ID[k]|v_name]
   Every N steps: per-atom uncertainty from the source (default: pair_style mdmonitor), its mean
   over each atom's neighbours within R including itself (Heid et al. 2024, Eq. 10), for atoms of
   the group. Per-atom array [atomic, local]; global vector [max local, atom ID of the max,
   number of atoms with local > T]. */

#ifndef LMP_FIX_MDMONITOR_H
#define LMP_FIX_MDMONITOR_H

#include "fix.h"

#include <string>
#include <vector>

namespace LAMMPS_NS {

class FixMDMonitor : public Fix {
 public:
  FixMDMonitor(class LAMMPS *, int, char **);
  ~FixMDMonitor() override;
  int setmask() override;
  void init() override;
  void init_list(int, class NeighList *) override;
  void setup(int) override;
  void end_of_step() override;
  double compute_vector(int) override;
  void grow_arrays(int) override;
  void copy_arrays(int, int, int) override;
  int pack_exchange(int, double *) override;
  int unpack_exchange(int, double *) override;
  int pack_forward_comm(int, int *, double *, int, int *) override;
  void unpack_forward_comm(int, int, double *) override;
  double memory_usage() override;

 private:
  enum Source { PAIR, COMPUTE, FIX, VARIABLE };
  Source source;
  std::string source_id;    // compute, fix or variable name
  int source_column;        // 0: per-atom vector, k: column k of a per-atom array
  double cutoff;            // aggregation radius (A)
  double threshold;         // local uncertainty counted as high above this
  bool has_threshold;

  class Pair *pair;
  class Compute *compute;
  class Fix *fix;
  int variable;
  class NeighList *list;

  double **values;                // per local atom: atomic, local uncertainty
  double global[3];               // max local, its atom ID, count above threshold
  std::vector<double> atomic;     // atomic uncertainty of local and ghost atoms
  std::vector<double> local;      // local uncertainty of local atoms
  std::vector<double> evaluated;  // atom-style variable values

  void parse_source(const std::string &);
  void read_source();
  void monitor();
};

}    // namespace LAMMPS_NS

#endif
