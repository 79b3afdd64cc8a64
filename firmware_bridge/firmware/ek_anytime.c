/* The sub-network table of a plain model: none. An anytime model's generated model.c defines
 * its own ek_paths, which takes the place of this weak one at link time. */
#include "ek_anytime.h"

__attribute__((weak)) const ek_paths_t ek_paths = {0, 0, 0, 0, 0};
