#include "algorithms/model.h"

namespace fedrec {

void RegisterBpr(ModelRegistry*) {}

}  // namespace fedrec
