#pragma once

#include <memory>
#include <string>

#include "weft/poller.h"

namespace weft::poll {
std::unique_ptr<Poller> make_io_uring_poller(std::string* why);
}
