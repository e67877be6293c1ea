// Everything weft offers, in one include.
#pragma once

#include "weft/runtime.h"
#if __has_include("weft/sync.h")
#include "weft/sync.h"
#endif
#if __has_include("weft/channel.h")
#include "weft/channel.h"
#endif
#if __has_include("weft/select.h")
#include "weft/select.h"
#endif
