// Everything weft offers, in one include.
#pragma once

#include "weft/channel.h"
#include "weft/context.h"
#include "weft/errgroup.h"
#include "weft/error.h"
#include "weft/fiber_local.h"
#include "weft/join.h"
#include "weft/net.h"
#include "weft/runtime.h"
#include "weft/select.h"
#include "weft/semaphore.h"
#include "weft/sync.h"
#include "weft/time.h"
