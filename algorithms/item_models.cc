#include "algorithms/model.h"

namespace fedrec {

void RegisterItemModels(ModelRegistry*) {}

}  // namespace fedrec
