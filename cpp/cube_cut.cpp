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

}    // namespace

CubeBox cut_cube(std::vector<Nearby> near, double core_radius, double box_length)
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
  const double half = 0.5 * box_length, reach = half * std::sqrt(3.0);
  CubeBox box{box_length, {}, {}};
  for (int k : order) {
    const Vec3 &d = near[k].displacement;
    const bool inside = std::all_of(d.begin(), d.end(), [&](double c) {
      return c >= -half && c < half;
    });
    if (!inside || distance[k] > reach) continue;
    box.atoms.push_back(near[k]);
    box.core.push_back(distance[k] <= core_radius);
  }

  // a buffer atom in close contact (minimum image in the cube) with a nearer atom that is kept
  // is the same atom twice, come in through opposite faces
  const int n = (int) box.atoms.size();
  std::vector<bool> dropped(n, false);
  for (int b = 0; b < n; ++b)
    for (int a = 0; a < b && !box.core[b]; ++a) {
      if (dropped[a]) continue;
      double sq = 0.0;
      for (int c = 0; c < 3; ++c) {
        double gap = box.atoms[b].displacement[c] - box.atoms[a].displacement[c];
        gap -= box_length * std::nearbyint(gap / box_length);
        sq += gap * gap;
      }
      const double limit = CONTACT_FACTOR *
          (covalent_radius(box.atoms[a].number) + covalent_radius(box.atoms[b].number));
      if (std::sqrt(sq) < limit) dropped[b] = true;
    }
  CubeBox kept{box_length, {}, {}};
  for (int k = 0; k < n; ++k)
    if (!dropped[k]) {
      kept.atoms.push_back(box.atoms[k]);
      kept.core.push_back(box.core[k]);
    }
  return kept;
}

}    // namespace mdmonitor
