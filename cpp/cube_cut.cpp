#include "cube_cut.h"

#include <algorithm>
#include <cmath>
#include <tuple>

namespace mdmonitor {

namespace {

double norm(const Vec3 &v)
{
  return std::sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]);
}

// for each entry of `near`, the entry of the heavy atom it belongs to (itself if heavy, as a
// hydrogen with no heavy atom within bond length), as mdmonitor.cutting.attached_hydrogens
std::vector<int> attached_hydrogens(const std::vector<Nearby> &near)
{
  const int n = (int) near.size();
  std::vector<int> owner(n);
  for (int k = 0; k < n; ++k) owner[k] = k;
  for (int h = 0; h < n; ++h) {
    if (near[h].number != 1) continue;
    int nearest = -1;
    double best = 0.0;
    for (int k = 0; k < n; ++k) {
      if (near[k].number == 1) continue;
      Vec3 gap;
      for (int c = 0; c < 3; ++c) gap[c] = near[k].displacement[c] - near[h].displacement[c];
      const double length = norm(gap);
      if (nearest < 0 || length < best) {
        nearest = k;
        best = length;
      }
    }
    if (nearest >= 0 &&
        best <= BOND_FACTOR * (covalent_radius(1) + covalent_radius(near[nearest].number)))
      owner[h] = nearest;
  }
  return owner;
}

}    // namespace

CubeBox cut_cube(std::vector<Nearby> near, double core_radius, double box_length, bool molecules)
{
  // by distance, then source atom, then image, as mdmonitor.cutting.surroundings
  std::vector<double> distance(near.size());
  std::vector<int> order(near.size());
  for (size_t k = 0; k < near.size(); ++k) {
    distance[k] = norm(near[k].displacement);
    order[k] = (int) k;
  }
  std::sort(order.begin(), order.end(), [&](int a, int b) {
    return std::tie(distance[a], near[a].index, near[a].image) <
        std::tie(distance[b], near[b].index, near[b].image);
  });
  std::vector<Nearby> sorted;
  for (int k : order) sorted.push_back(near[k]);
  std::sort(distance.begin(), distance.end());
  std::vector<int> owner(sorted.size());
  if (molecules)
    owner = attached_hydrogens(sorted);
  else
    for (size_t k = 0; k < sorted.size(); ++k) owner[k] = (int) k;

  // the units (atoms, or heavy atoms with their hydrogens) whose own atom is in the cube
  const double half = 0.5 * box_length, reach = half * std::sqrt(3.0);
  auto chosen = [&](int unit) {
    const Vec3 &d = sorted[unit].displacement;
    return distance[unit] <= reach && std::all_of(d.begin(), d.end(), [&](double c) {
      return c >= -half && c < half;
    });
  };
  CubeBox box{box_length, {}, {}};
  std::vector<int> unit_of;
  for (size_t k = 0; k < sorted.size(); ++k) {
    if (!chosen(owner[k])) continue;
    box.atoms.push_back(sorted[k]);
    box.core.push_back(distance[owner[k]] <= core_radius);
    unit_of.push_back(owner[k]);
  }

  // a buffer unit with an atom in close contact (minimum image in the cube) with an atom of a
  // unit that is kept, nearer the centre, is the same unit twice, come in through opposite faces
  const int n = (int) box.atoms.size();
  std::vector<bool> dropped(sorted.size(), false);    // by unit
  for (int b = 0; b < n; ++b)
    for (int a = 0; a < b && !box.core[b]; ++a) {
      if (dropped[unit_of[a]]) continue;
      double sq = 0.0;
      for (int c = 0; c < 3; ++c) {
        double gap = box.atoms[b].displacement[c] - box.atoms[a].displacement[c];
        gap -= box_length * std::nearbyint(gap / box_length);
        sq += gap * gap;
      }
      const double limit = CONTACT_FACTOR *
          (covalent_radius(box.atoms[a].number) + covalent_radius(box.atoms[b].number));
      if (std::sqrt(sq) < limit) dropped[unit_of[b]] = true;
    }
  CubeBox kept{box_length, {}, {}};
  for (int k = 0; k < n; ++k)
    if (!dropped[unit_of[k]]) {
      kept.atoms.push_back(box.atoms[k]);
      kept.core.push_back(box.core[k]);
    }
  return kept;
}

}    // namespace mdmonitor
