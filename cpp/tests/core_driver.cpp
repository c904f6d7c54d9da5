/* Test driver for the mdmonitor core: reads one task from stdin, prints the result.
     local_mean   n_atoms n_centres cutoff group_bit | n_atoms x (x y z value mask) |
                  n_centres x (centre count neighbours...)       -> "centre mean" lines
     contacts     n_atoms n_centres factor | n_atoms x (x y z radius) |
                  n_centres x (centre count neighbours...)       -> indices
     rank_above   n threshold | n x (value tag)                 -> indices
     choose       separation limit | 3 x (cell row) | 3 x periodic |
                  n_candidates x (x y z) | n_avoid x (x y z)    -> indices
     distance     3 x (cell row) | 3 x periodic | n | n x (a b) -> distances
     images       3 x (cell row) | 3 x periodic | radius | x y z -> "shift displacement" lines
     cube         core_radius box_length molecules | n | n x (index image displacement number)
                                                                -> "index image core" lines */

#include "cube_cut.h"

#include <cstdio>
#include <iostream>
#include <string>

using namespace mdmonitor;

namespace {

Vec3 read_vec3()
{
  Vec3 v;
  std::cin >> v[0] >> v[1] >> v[2];
  return v;
}

Cell read_cell()
{
  Cell cell;
  for (auto &row : cell.vectors) row = read_vec3();
  for (auto &p : cell.periodic) {
    int flag;
    std::cin >> flag;
    p = flag != 0;
  }
  return cell;
}

std::vector<Vec3> read_positions()
{
  int n;
  std::cin >> n;
  std::vector<Vec3> positions(n);
  for (auto &p : positions) p = read_vec3();
  return positions;
}

void print_indices(const std::vector<int> &indices)
{
  for (int i : indices) std::printf("%d\n", i);
}

// Neighbour lists read as n_centres x (centre count neighbours...), in LAMMPS's layout.
struct ReadLists {
  std::vector<int> centres, count;
  std::vector<std::vector<int>> storage;
  std::vector<const int *> neighbours;

  ReadLists(int n_atoms, int n_centres) :
      centres(n_centres), count(n_atoms, 0), storage(n_atoms), neighbours(n_atoms, nullptr)
  {
    for (int &i : centres) {
      std::cin >> i >> count[i];
      storage[i].resize(count[i]);
      for (int &j : storage[i]) std::cin >> j;
      neighbours[i] = storage[i].data();
    }
  }
  NeighbourLists lists() const
  {
    return {(int) centres.size(), centres.data(), count.data(), neighbours.data(), ~0};
  }
};

std::vector<const double *> rows(const std::vector<Vec3> &positions)
{
  std::vector<const double *> x;
  for (const Vec3 &p : positions) x.push_back(p.data());
  return x;
}

}    // namespace

int main()
{
  std::string task;
  std::cin >> task;
  if (task == "local_mean") {
    int n_atoms, n_centres, group_bit;
    double cutoff;
    std::cin >> n_atoms >> n_centres >> cutoff >> group_bit;
    std::vector<Vec3> positions(n_atoms);
    std::vector<double> values(n_atoms), mean(n_atoms, -1.0);
    std::vector<int> mask(n_atoms);
    for (int i = 0; i < n_atoms; ++i) {
      positions[i] = read_vec3();
      std::cin >> values[i] >> mask[i];
    }
    const ReadLists read(n_atoms, n_centres);
    local_mean(read.lists(), rows(positions).data(), values.data(), cutoff, mean.data(),
               group_bit ? mask.data() : nullptr, group_bit);
    for (int i : read.centres) std::printf("%d %.17g\n", i, mean[i]);
  } else if (task == "contacts") {
    int n_atoms, n_centres;
    double factor;
    std::cin >> n_atoms >> n_centres >> factor;
    std::vector<Vec3> positions(n_atoms);
    std::vector<double> radius(n_atoms);
    for (int i = 0; i < n_atoms; ++i) {
      positions[i] = read_vec3();
      std::cin >> radius[i];
    }
    const ReadLists read(n_atoms, n_centres);
    print_indices(close_contacts(read.lists(), rows(positions).data(), radius.data(), factor));
  } else if (task == "rank_above") {
    int n;
    double threshold;
    std::cin >> n >> threshold;
    std::vector<double> values(n);
    std::vector<int64_t> tags(n);
    for (int i = 0; i < n; ++i) std::cin >> values[i] >> tags[i];
    print_indices(rank_above(n, values.data(), tags.data(), threshold));
  } else if (task == "choose") {
    double separation;
    int limit;
    std::cin >> separation >> limit;
    const Cell cell = read_cell();
    const auto candidates = read_positions();
    const auto avoid = read_positions();
    print_indices(choose_centres(candidates, separation, limit, cell, avoid));
  } else if (task == "distance") {
    const Cell cell = read_cell();
    int n;
    std::cin >> n;
    for (int pair = 0; pair < n; ++pair) {
      const Vec3 a = read_vec3(), b = read_vec3();
      std::printf("%.17g\n", minimum_image_distance(a, b, cell));
    }
  } else if (task == "images") {
    const Cell cell = read_cell();
    double radius;
    std::cin >> radius;
    for (const Image &image : images_within(read_vec3(), cell, radius)) {
      const auto &[s, d] = image;
      std::printf("%d %d %d %.17g %.17g %.17g\n", s[0], s[1], s[2], d[0], d[1], d[2]);
    }
  } else if (task == "cube") {
    double core_radius, box_length;
    int molecules, n;
    std::cin >> core_radius >> box_length >> molecules >> n;
    std::vector<Nearby> near(n);
    for (auto &atom : near) {
      std::cin >> atom.index >> atom.image[0] >> atom.image[1] >> atom.image[2];
      atom.displacement = read_vec3();
      std::cin >> atom.number;
    }
    const CubeBox box = cut_cube(near, core_radius, box_length, molecules != 0);
    for (size_t k = 0; k < box.atoms.size(); ++k) {
      const Nearby &atom = box.atoms[k];
      std::printf("%lld %d %d %d %d\n", (long long) atom.index, atom.image[0], atom.image[1],
                  atom.image[2], (int) box.core[k]);
    }
  } else {
    std::fprintf(stderr, "unknown task '%s'\n", task.c_str());
    return 2;
  }
  return std::cin.fail() ? 1 : 0;
}
