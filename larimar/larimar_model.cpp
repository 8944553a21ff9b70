#include "larimar/larimar_model.h"

namespace larimar {

template struct LarimarModel<CpuBackend>;

}  // namespace larimar
