/* mdmonitor core: the LAMMPS-independent algorithms of the mdmonitor LAMMPS plugin.
   Units are those of the caller (LAMMPS metal: A for distances). */

#ifndef MDMONITOR_CORE_H
#define MDMONITOR_CORE_H

#include <array>
#include <cstdint>
#include <vector>

namespace mdmonitor {

using Vec3 = std::array<double, 3>;

// Neighbour lists in the layout LAMMPS uses: the neighbours of centre i = centres[ii] are
// neighbours[i][0 .. count[i]), each index to be and-ed with index_mask (LAMMPS keeps
// special-bond bits in the high bits). Lists may hold pairs beyond the wanted cutoff.
struct NeighbourLists {
  int n_centres;
  const int *centres;
  const int *count;
  const int *const *neighbours;
  int index_mask;
};

// Mean of `values` over each centre and its neighbours closer than `cutoff` (strictly), the
// centre included (Heid et al. 2024, Eq. 10), written to mean[i] for every centre i.
// Each periodic image is a separate atom of x/values, so images count separately, as in
// mdmonitor.aggregation.local_mean. With group_mask non-null only atoms j with
// (group_mask[j] & group_bit) are averaged over and given a mean (others get 0).
// The values are summed in increasing order, so a mean depends on the values alone, bit for
// bit, not on the order of the neighbours (which differs between ranks, and between atoms
// that are equivalent by symmetry).
void local_mean(const NeighbourLists &lists, const double *const *x, const double *values,
                double cutoff, double *mean, const int *group_mask = nullptr,
                int group_bit = 0);

// The centres closer than factor x (radius[i] + radius[j]) to some neighbour j (an atom or a
// periodic image; radius per atom of x, A), in the order of `lists`: the atoms in close
// contact (Tan et al. 2023, Sec. 2.5), as mdmonitor.stability.close_contacts.
std::vector<int> close_contacts(const NeighbourLists &lists, const double *const *x,
                                const double *radius, double factor);

// Indices of the values above `threshold`, largest first; equal values by smaller tag.
std::vector<int> rank_above(int n, const double *values, const int64_t *tags, double threshold);

// A simulation cell: rows are the cell vectors a, b, c (A, linearly independent); images are
// taken only along periodic directions.
struct Cell {
  std::array<Vec3, 3> vectors;
  std::array<bool, 3> periodic;
};

// Distance between a and b to the nearest periodic image of b.
double minimum_image_distance(const Vec3 &a, const Vec3 &b, const Cell &cell);

// A periodic image of an atom near a point: integer cell vector and displacement (A).
struct Image {
  std::array<int, 3> shift;
  Vec3 displacement;
};

// Every periodic image of an atom at displacement `raw` from a point that lies within `radius`
// (A) of it, as mdmonitor.cutting.surroundings: shifts count from `raw`.
std::vector<Image> images_within(const Vec3 &raw, const Cell &cell, double radius);

// Greedy choice among candidates (positions, most uncertain first), as
// mdmonitor.centres.choose_centres: a candidate is taken unless it lies within `separation`
// (minimum image) of a centre already taken or of a position in `avoid`; at most `limit`.
// Returns indices into `candidates`.
std::vector<int> choose_centres(const std::vector<Vec3> &candidates, double separation,
                                int limit, const Cell &cell,
                                const std::vector<Vec3> &avoid = {});

}    // namespace mdmonitor

#endif
