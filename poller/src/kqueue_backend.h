#pragma once

#include <memory>
#include <string>

#include "weft/poller.h"

namespace weft::poll {
std::unique_ptr<Poller> make_kqueue_poller(std::string* why);
}
