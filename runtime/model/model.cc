#include "runtime/model/model.h"
