/* Cutting a periodic cube around one atom, as mdmonitor.cutting.cut_cube with box_length only.
   Distances in A. */

#ifndef MDMONITOR_CUBE_CUT_H
#define MDMONITOR_CUBE_CUT_H

#include "mdmonitor_core.h"

#include <string>

namespace mdmonitor {

// One atom, or one periodic image of it, near the centre atom: source atom index, integer
// image (cell vectors), displacement from the centre (A), atomic number.
struct Nearby {
  int64_t index;
  std::array<int, 3> image;
  Vec3 displacement;
  int number;
};

// A cut cube: its atoms by distance from the centre (the centre first) and their core mask.
struct CubeBox {
  double length;
  std::vector<Nearby> atoms;
  std::vector<bool> core;
};

// The atoms of `near` (every atom and image within box_length * sqrt(3) / 2 of the centre, in
// any order) inside the half-open cube [-L/2, L/2)^3 around the centre, core within
// core_radius, without the buffer atoms in close contact (CONTACT_FACTOR x the sum of covalent
// radii) across the faces with an atom nearer the centre.
CubeBox cut_cube(std::vector<Nearby> near, double core_radius, double box_length);

constexpr double CONTACT_FACTOR = 0.5;

// Covalent radius (A) of element `number` (ASE's table); atomic number of a symbol (0 unless
// an element) and symbol of a number.
double covalent_radius(int number);
int atomic_number(const std::string &symbol);
const char *element_symbol(int number);

}    // namespace mdmonitor

#endif
