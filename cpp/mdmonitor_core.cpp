#include "mdmonitor_core.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <stdexcept>

namespace mdmonitor {

void local_mean(const NeighbourLists &lists, const double *const *x, const double *values,
                double cutoff, double *mean, const int *group_mask, int group_bit)
{
  const double cutsq = cutoff * cutoff;
  auto counted = [&](int j) { return !group_mask || (group_mask[j] & group_bit); };
  // NaN last, so that the order is a strict weak one even then
  auto ascending = [](double a, double b) { return a < b || (std::isnan(b) && !std::isnan(a)); };
  std::vector<double> terms;
  for (int ii = 0; ii < lists.n_centres; ++ii) {
    const int i = lists.centres[ii];
    if (!counted(i)) {
      mean[i] = 0.0;
      continue;
    }
    terms.assign(1, values[i]);
    for (int jj = 0; jj < lists.count[i]; ++jj) {
      const int j = lists.neighbours[i][jj] & lists.index_mask;
      if (!counted(j)) continue;
      const double dx = x[j][0] - x[i][0], dy = x[j][1] - x[i][1], dz = x[j][2] - x[i][2];
      if (dx * dx + dy * dy + dz * dz < cutsq) terms.push_back(values[j]);
    }
    std::sort(terms.begin(), terms.end(), ascending);
    mean[i] = std::accumulate(terms.begin(), terms.end(), 0.0) / (double) terms.size();
  }
}

std::vector<int> close_contacts(const NeighbourLists &lists, const double *const *x,
                                const double *radius, double factor)
{
  std::vector<int> touching;
  for (int ii = 0; ii < lists.n_centres; ++ii) {
    const int i = lists.centres[ii];
    for (int jj = 0; jj < lists.count[i]; ++jj) {
      const int j = lists.neighbours[i][jj] & lists.index_mask;
      const double dx = x[j][0] - x[i][0], dy = x[j][1] - x[i][1], dz = x[j][2] - x[i][2];
      const double limit = factor * (radius[i] + radius[j]);
      if (dx * dx + dy * dy + dz * dz < limit * limit) {
        touching.push_back(i);
        break;
      }
    }
  }
  return touching;
}

std::vector<int> rank_above(int n, const double *values, const int64_t *tags, double threshold)
{
  std::vector<int> above;
  for (int i = 0; i < n; ++i)
    if (values[i] > threshold) above.push_back(i);
  std::sort(above.begin(), above.end(), [&](int a, int b) {
    return values[a] != values[b] ? values[a] > values[b] : tags[a] < tags[b];
  });
  return above;
}

namespace {

// Inverse of the matrix whose rows are the cell vectors: fractional = cartesian * inverse.
std::array<Vec3, 3> inverse(const std::array<Vec3, 3> &h)
{
  const double det = h[0][0] * (h[1][1] * h[2][2] - h[1][2] * h[2][1]) -
      h[0][1] * (h[1][0] * h[2][2] - h[1][2] * h[2][0]) +
      h[0][2] * (h[1][0] * h[2][1] - h[1][1] * h[2][0]);
  if (!(std::fabs(det) > 0.0)) throw std::invalid_argument("cell vectors are not independent");
  std::array<Vec3, 3> inv;
  for (int r = 0; r < 3; ++r)
    for (int c = 0; c < 3; ++c) {
      const int r1 = (c + 1) % 3, r2 = (c + 2) % 3, c1 = (r + 1) % 3, c2 = (r + 2) % 3;
      inv[r][c] = (h[r1][c1] * h[r2][c2] - h[r1][c2] * h[r2][c1]) / det;
    }
  return inv;
}

}    // namespace

double minimum_image_distance(const Vec3 &a, const Vec3 &b, const Cell &cell)
{
  const auto inv = inverse(cell.vectors);
  Vec3 frac{};
  for (int k = 0; k < 3; ++k) {
    for (int d = 0; d < 3; ++d) frac[k] += (b[d] - a[d]) * inv[d][k];
    if (cell.periodic[k]) frac[k] -= std::nearbyint(frac[k]);
  }
  // after wrapping, the nearest image is the wrapped one or one of its neighbours
  double best = std::numeric_limits<double>::infinity();
  for (int s0 = -1; s0 <= 1; ++s0)
    for (int s1 = -1; s1 <= 1; ++s1)
      for (int s2 = -1; s2 <= 1; ++s2) {
        const std::array<int, 3> s{s0, s1, s2};
        bool allowed = true;
        for (int k = 0; k < 3; ++k) allowed = allowed && (s[k] == 0 || cell.periodic[k]);
        if (!allowed) continue;
        double sq = 0.0;
        for (int d = 0; d < 3; ++d) {
          double component = 0.0;
          for (int k = 0; k < 3; ++k) component += (frac[k] + s[k]) * cell.vectors[k][d];
          sq += component * component;
        }
        best = std::min(best, sq);
      }
  return std::sqrt(best);
}

std::vector<Image> images_within(const Vec3 &raw, const Cell &cell, double radius)
{
  const auto inv = inverse(cell.vectors);
  std::array<int, 3> wrap{}, reach{};
  for (int k = 0; k < 3; ++k) {
    if (!cell.periodic[k]) continue;
    double frac = 0.0, column = 0.0;
    for (int d = 0; d < 3; ++d) {
      frac += raw[d] * inv[d][k];
      column += inv[d][k] * inv[d][k];
    }
    wrap[k] = (int) -std::floor(frac + 0.5);
    // planes of cell vector k are 1/|column k of the inverse| apart (A)
    reach[k] = (int) std::ceil(radius * std::sqrt(column) + 0.5);
  }
  std::vector<Image> images;
  for (int s0 = -reach[0]; s0 <= reach[0]; ++s0)
    for (int s1 = -reach[1]; s1 <= reach[1]; ++s1)
      for (int s2 = -reach[2]; s2 <= reach[2]; ++s2) {
        const std::array<int, 3> shift{wrap[0] + s0, wrap[1] + s1, wrap[2] + s2};
        Vec3 displacement = raw;
        for (int d = 0; d < 3; ++d)
          for (int k = 0; k < 3; ++k) displacement[d] += shift[k] * cell.vectors[k][d];
        const double sq = displacement[0] * displacement[0] +
            displacement[1] * displacement[1] + displacement[2] * displacement[2];
        if (std::sqrt(sq) <= radius) images.push_back({shift, displacement});
      }
  return images;
}

std::vector<int> choose_centres(const std::vector<Vec3> &candidates, double separation,
                                int limit, const Cell &cell, const std::vector<Vec3> &avoid)
{
  auto clear_of = [&](const Vec3 &p, const Vec3 &q) {
    return minimum_image_distance(p, q, cell) >= separation;
  };
  std::vector<int> chosen;
  for (int c = 0; c < (int) candidates.size() && (int) chosen.size() < limit; ++c) {
    const Vec3 &p = candidates[c];
    const bool free =
        std::all_of(avoid.begin(), avoid.end(), [&](const Vec3 &q) { return clear_of(p, q); }) &&
        std::all_of(chosen.begin(), chosen.end(),
                    [&](int k) { return clear_of(p, candidates[k]); });
    if (free) chosen.push_back(c);
  }
  return chosen;
}

}    // namespace mdmonitor
