#include "cube_cut.h"

#include <algorithm>
#include <cmath>
#include <tuple>

namespace mdmonitor {

namespace {

// ase.data.chemical_symbols and ase.data.covalent_radii (A), indexed by atomic number
const char *const SYMBOLS[] = {
    "X", "H", "He", "Li", "Be", "B", "C", "N", "O", "F", "Ne", "Na", "Mg", "Al", "Si", "P", "S",
    "Cl", "Ar", "K", "Ca", "Sc", "Ti", "V", "Cr", "Mn", "Fe", "Co", "Ni", "Cu", "Zn", "Ga",
    "Ge", "As", "Se", "Br", "Kr", "Rb", "Sr", "Y", "Zr", "Nb", "Mo", "Tc", "Ru", "Rh", "Pd",
    "Ag", "Cd", "In", "Sn", "Sb", "Te", "I", "Xe", "Cs", "Ba", "La", "Ce", "Pr", "Nd", "Pm",
    "Sm", "Eu", "Gd", "Tb", "Dy", "Ho", "Er", "Tm", "Yb", "Lu", "Hf", "Ta", "W", "Re", "Os",
    "Ir", "Pt", "Au", "Hg", "Tl", "Pb", "Bi", "Po", "At", "Rn", "Fr", "Ra", "Ac", "Th", "Pa",
    "U", "Np", "Pu", "Am", "Cm", "Bk", "Cf", "Es", "Fm", "Md", "No", "Lr", "Rf", "Db", "Sg",
    "Bh", "Hs", "Mt", "Ds", "Rg", "Cn", "Nh", "Fl", "Mc", "Lv", "Ts", "Og"};
const double COVALENT_RADII[] = {
    0.2, 0.31, 0.28, 1.28, 0.96, 0.84, 0.76, 0.71, 0.66, 0.57, 0.58, 1.66, 1.41, 1.21, 1.11,
    1.07, 1.05, 1.02, 1.06, 2.03, 1.76, 1.7, 1.6, 1.53, 1.39, 1.39, 1.32, 1.26, 1.24, 1.32,
    1.22, 1.22, 1.2, 1.19, 1.2, 1.2, 1.16, 2.2, 1.95, 1.9, 1.75, 1.64, 1.54, 1.47, 1.46, 1.42,
    1.39, 1.45, 1.44, 1.42, 1.39, 1.39, 1.38, 1.39, 1.4, 2.44, 2.15, 2.07, 2.04, 2.03, 2.01,
    1.99, 1.98, 1.98, 1.96, 1.94, 1.92, 1.92, 1.89, 1.9, 1.87, 1.87, 1.75, 1.7, 1.62, 1.51,
    1.44, 1.41, 1.36, 1.36, 1.32, 1.45, 1.46, 1.48, 1.4, 1.5, 1.5, 2.6, 2.21, 2.15, 2.06, 2,
    1.96, 1.9, 1.87, 1.8, 1.69, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2};
constexpr int N_ELEMENTS = sizeof(SYMBOLS) / sizeof(SYMBOLS[0]);

double norm(const Vec3 &v)
{
  return std::sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]);
}

}    // namespace

double covalent_radius(int number)
{
  return COVALENT_RADII[number > 0 && number < N_ELEMENTS ? number : 0];
}

int atomic_number(const std::string &symbol)
{
  for (int z = 1; z < N_ELEMENTS; ++z)
    if (symbol == SYMBOLS[z]) return z;
  return 0;
}

const char *element_symbol(int number)
{
  return SYMBOLS[number > 0 && number < N_ELEMENTS ? number : 0];
}

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
