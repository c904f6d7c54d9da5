/* Cutting a periodic cube around one atom, as mdmonitor.cutting.cut_cube with box_length only
   (and molecules). Distances in A. */

#ifndef MDMONITOR_CUBE_CUT_H
#define MDMONITOR_CUBE_CUT_H

#include "elements.h"
#include "mdmonitor_core.h"

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
// any order; MOLECULE_REACH A further with molecules) inside the half-open cube [-L/2, L/2)^3
// around the centre, core within core_radius, without the buffer atoms in close contact
// (CONTACT_FACTOR x the sum of covalent radii) across the faces with an atom nearer the centre.
// With molecules, whole molecules: the heavy atoms inside, each with the hydrogens nearest to it
// within BOND_FACTOR x the sum of covalent radii; core, inside and left out by molecule.
CubeBox cut_cube(std::vector<Nearby> near, double core_radius, double box_length,
                 bool molecules = false);

constexpr double CONTACT_FACTOR = 0.5;
constexpr double BOND_FACTOR = 1.2;       // mdmonitor.common.geometry.BOND_FACTOR
constexpr double MOLECULE_REACH = 2.0;    // A beyond the cube's reach, for the hydrogens

// A cube spans at most MAX_CELL_VOLUMES volumes of the periodic cell it is cut from, so an edge
// of at most 2 x volume^(1/3): each atom is in a cube about L^3 / volume times, and every image
// within reach of it is gathered first (a 1000 A cube around a 96-atom slab took 12 GB).
constexpr double MAX_CELL_VOLUMES = 8.0;

}    // namespace mdmonitor

#endif
