/* fix ID group mdmonitor N cutoff R [threshold T|T1,T2,...|threshold_file PATH]
       [source pair|c_ID|c_ID[k]|f_ID|f_ID[k]|v_name] [contact F]
       [extract cube core Rc box L queue DIR [max_boxes M] [cooldown C] [separation S]
        [run_id NAME] [centres El1[,El2...]] [molecules yes|no]]
   Every N steps: per-atom uncertainty from the source (default: pair_style mdmonitor), its mean
   over each atom's neighbours within R including itself (Heid et al. 2024, Eq. 10), for atoms of
   the group. Per-atom array [atomic, local]; global vector [max local, atom ID of the max
   (the smallest on exact ties), number of atoms with local > T, boxes extracted, number of
   atoms (of all) closer than F x (sum of covalent radii) to another atom or image: close
   contacts, as mdmonitor.stability.StabilityCriteria(contact_factor=F), F = 0.5 by default,
   threshold sets taken from the threshold file so far].
   threshold_file PATH: the thresholds as a text file ("thresholds T" or "thresholds T1 T2 ...",
   optional "label TEXT" and "cutoff R" lines, # comments), which rank 0 reads again at every
   monitored step; when its bytes changed every rank takes its thresholds from that step on, and
   the LAMMPS log names them with the file's label (mdmonitor writes it from a calibration that
   is refitted during the run: mdmonitor.lammps.thresholds).
   With extract, on every such step with atoms above T: a periodic cube of edge L around the
   most uncertain atom (not within S of a centre cut in the last C steps), written to the
   candidate queue DIR as mdmonitor.Extractor(strategy="cube", relax="label") does (see
   mdmonitor_core's cube_cut.h and candidate_queue.h); centres: only atoms of these elements are
   centres, as Extractor(..., centre_elements=[...]); molecules yes: of whole molecules (heavy
   atoms with their hydrogens), as Extractor(..., molecules=True).
   With source pair, the fix asks the pair style for the uncertainty (its "uncertainty_flag"
   trigger) before the force call of every N-th step and of the setup, so that a committee
   exported with a driver evaluates its members, and an LLPR its last-layer LPR, on those steps
   only; it refuses values the pair did not compute at the current step. */

#ifndef LMP_FIX_MDMONITOR_H
#define LMP_FIX_MDMONITOR_H

#include "fix.h"

#include "candidate_queue.h"

#include <memory>
#include <string>
#include <utility>
#include <vector>


namespace LAMMPS_NS {

class FixMDMonitor : public Fix {
 public:
  FixMDMonitor(class LAMMPS *, int, char **);
  ~FixMDMonitor() override;
  int setmask() override;
  void init() override;
  void init_list(int, class NeighList *) override;
  void setup_pre_force(int) override;
  void setup(int) override;
  void pre_force(int) override;
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
  std::vector<double> type_thresholds;    // per atom type (1-based), from T1,T2,...; else empty
  std::string threshold_file;             // thresholds followed from this file, or empty
  std::string threshold_text;             // the file's contents when last taken up (rank 0)
  int threshold_sets;                     // threshold sets taken from the file so far

  class Pair *pair;
  int *uncertainty_trigger;       // pair style's "uncertainty_flag" (source pair), or null
  bigint *uncertainty_step;       // step of the pair style's uncertainty (source pair), or null
  class Compute *compute;
  class Fix *fix;
  int variable;
  class NeighList *list;

  // box extraction (extract keyword)
  bool extracting, molecules;
  double core_radius, box_length, separation;    // A
  int max_boxes;                                 // boxes of run_id in the queue; -1: no limit
  int cooldown;                                  // steps
  std::string queue_dir, run_id;
  std::unique_ptr<mdmonitor::CandidateQueue> queue;    // on rank 0
  int boxes_in_queue;                                  // boxes of run_id in the queue
  std::vector<std::pair<bigint, tagint>> recent;       // (step, atom ID) of recent centres
  std::vector<std::string> type_elements;              // element of each atom type
  std::vector<std::string> centre_elements;            // centres keyword; empty: any
  std::vector<bool> centre_type;                       // whether a type's atoms may be centres
  std::string model_files, model_sha256;               // ";"-joined, from pair mdmonitor

  double contact_factor;          // close contact below this x (sum of covalent radii)
  std::vector<double> type_radius;    // covalent radius (A) of each atom type

  double **values;                // per local atom: atomic, local uncertainty
  double global[6];               // max local, its atom ID, count above threshold, boxes,
                                  // atoms in close contact, threshold sets from the file
  std::vector<double> radius;     // covalent radius (A) of local and ghost atoms
  std::vector<double> atomic;     // atomic uncertainty of local and ghost atoms
  std::vector<double> local;      // local uncertainty of local atoms
  std::vector<double> evaluated;  // atom-style variable values

  double parse_number(const std::string &, const char *, double, bool);
  std::vector<double> thresholds_of(const std::vector<std::string> &, const std::string &) const;
  void set_thresholds(const std::vector<double> &);
  std::vector<double> parse_threshold_file(const std::string &, std::string &) const;
  void follow_threshold_file();
  double threshold_of(int) const;
  int parse_count(const std::string &, const char *);
  void parse_source(const std::string &);
  bool parse_extraction(const std::string &, const char *);
  void read_source();
  void set_type_radii();
  double count_close_contacts();
  void monitor();
  void extract();
  std::vector<mdmonitor::Vec3> positions_of(const std::vector<tagint> &);
  std::vector<mdmonitor::Nearby> gather_near(const mdmonitor::Vec3 &, const mdmonitor::Cell &);
  void write_box(const std::string &, const std::vector<mdmonitor::Nearby> &, tagint, double);
  std::pair<double, tagint> most_uncertain(double, tagint);
};

}    // namespace LAMMPS_NS

#endif
