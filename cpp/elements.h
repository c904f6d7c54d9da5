/* The periodic table as ASE has it (ase.data): symbols, covalent radii and standard masses. */

#ifndef MDMONITOR_ELEMENTS_H
#define MDMONITOR_ELEMENTS_H

#include <string>

namespace mdmonitor {

// Atomic number of a symbol (0 unless an element) and symbol of a number ("X" if none).
int atomic_number(const std::string &symbol);
const char *element_symbol(int number);

// Covalent radius (A) and standard atomic mass (g/mol, as LAMMPS metal units) of element
// `number`.
double covalent_radius(int number);
double standard_mass(int number);

// Atomic number of the element whose standard mass is nearest `mass` (g/mol).
int nearest_element_by_mass(double mass);

}    // namespace mdmonitor

#endif
