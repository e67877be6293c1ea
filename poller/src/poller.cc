#include <cstdlib>

#include "epoll_backend.h"
#include "weft/poller.h"

namespace weft::poll {

const char* const* available_backends() {
  static const char* const names[] = {"epoll", nullptr};
  return names;
}

std::unique_ptr<Poller> make_poller(const std::string& name, std::string* why) {
  if (name.empty() || name == "epoll") return make_epoll_poller(why);
  if (why) *why = "poller backend '" + name + "' is not built into this weft (have: epoll)";
  return nullptr;
}

}  // namespace weft::poll
