#include "algorithms/model.h"

namespace fedrec {

void RegisterIals(ModelRegistry*) {}

}  // namespace fedrec
