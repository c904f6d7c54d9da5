/* The candidate queue of mdmonitor.candidates, written from C++: pending/, done/, failed/ and
   manifest.csv under one directory; box files are extxyz written atomically (temporary name,
   then rename) under deterministic names, so a restarted run skips the boxes it wrote. */

#ifndef MDMONITOR_CANDIDATE_QUEUE_H
#define MDMONITOR_CANDIDATE_QUEUE_H

#include "cube_cut.h"

#include <string>
#include <utility>
#include <vector>

namespace mdmonitor {

// info of a box: key and value as text, in order
using Info = std::vector<std::pair<std::string, std::string>>;

// run_id: letters, digits, '.' or '-', starting with a letter or digit
bool valid_run_id(const std::string &run_id);

// `<run>_step<step>_atom<centre>_s<sample>.extxyz`, as mdmonitor.candidates.box_name
std::string box_name(const std::string &run_id, int64_t step, int64_t centre, int sample = 0);

// extxyz text of a cube (atoms at displacement + L/2; arrays core_mask, source_index,
// source_image) with `info`; values holding spaces are quoted
std::string extxyz_text(const CubeBox &box, const Info &info);

class CandidateQueue {
 public:
  // creates the stage directories and the manifest header if missing (std::runtime_error)
  explicit CandidateQueue(const std::string &root);
  // whether box `name` is in any stage
  bool contains(const std::string &name) const;
  // boxes of run `run_id` in all stages
  int count(const std::string &run_id) const;
  // writes `box` into pending/ atomically and logs a "written" line in the manifest
  void write_pending(const std::string &name, const CubeBox &box, const Info &info) const;

 private:
  std::string root;
};

}    // namespace mdmonitor

#endif
