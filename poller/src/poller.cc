#include "weft/poller.h"
#ifdef WEFT_HAVE_EPOLL
#include "epoll_backend.h"
#endif
#ifdef WEFT_HAVE_IO_URING
#include "io_uring_backend.h"
#endif
#ifdef WEFT_HAVE_KQUEUE
#include "kqueue_backend.h"
#endif

namespace weft::poll {

// Best first. epoll leads: measured here, io_uring's poll completions reach a
// blocked waiter ~30x slower with 2 workers (they are delivered through the
// submitting thread's task_work), until the backend gets a ring per worker.
// kqueue leads where there is no epoll (BSD, macOS); on Linux it is
// libkqueue's emulation on epoll, built for conformance tests, and last.
const char* const* available_backends() {
  static const char* const names[] = {
#ifdef WEFT_HAVE_EPOLL
      "epoll",
#endif
#ifdef WEFT_HAVE_IO_URING
      "io_uring",
#endif
#ifdef WEFT_HAVE_KQUEUE
      "kqueue",
#endif
      nullptr};
  return names;
}

std::unique_ptr<Poller> make_poller(const std::string& name, std::string* why) {
  if (name.empty()) return make_poller(available_backends()[0], why);
#ifdef WEFT_HAVE_EPOLL
  if (name == "epoll") return make_epoll_poller(why);
#endif
#ifdef WEFT_HAVE_IO_URING
  if (name == "io_uring") return make_io_uring_poller(why);
#endif
#ifdef WEFT_HAVE_KQUEUE
  if (name == "kqueue") return make_kqueue_poller(why);
#endif
  if (why) {
    std::string built;
    for (const char* const* n = available_backends(); *n; ++n)
      built += std::string(built.empty() ? "" : ", ") + *n;
    const bool known = name == "epoll" || name == "io_uring" || name == "kqueue";
    *why = (known ? name + " is not built into this weft"
                  : "no poller backend is named '" + name + "'") +
           "; built: " + built;
  }
  return nullptr;
}

}  // namespace weft::poll
