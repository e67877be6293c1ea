// Code that must not compile, one case per WEFT_CASE, and the message each
// must fail with: check.sh compiles every case and compares. WEFT_CASE=good
// is the control (the same includes and flags, valid code), so that a case
// cannot "fail" for a reason of its own, such as a missing include.
#include <chrono>
#include <optional>

#include "weft/channel.h"
#include "weft/context.h"
#include "weft/join.h"
#include "weft/select.h"
#include "weft/time.h"

using namespace std::chrono_literals;

void snippet(weft::Channel<int>& ch, const weft::Context& ctx) {
  (void)ch;
  (void)ctx;
#if defined(WEFT_CASE_good)
  weft::select(weft::on_recv(ch, [](std::optional<int>) {}), weft::on_recv(ch, [](auto) {}),
               weft::on_send(ch, 1, [](bool) {}), weft::on_done(ctx, [] {}),
               weft::on_recv(weft::after(1s), [](auto) {}), weft::on_default([] {}));
  if (!ch.send(1)) return;
  int v = 2;
  if (!ch.try_send(v) || !ch.try_send(3)) return;
  auto h = weft::spawn([] {});
  h.join();
#elif defined(WEFT_CASE_recv_handler)
  // expect: weft::on_recv: the handler must be callable as f(std::optional<T>)
  weft::select(weft::on_recv(ch, [](int) {}));
#elif defined(WEFT_CASE_after_handler)
  // expect: weft::on_recv: the handler must be callable as f(std::optional<T>)
  weft::select(weft::on_recv(weft::after(1s), [](int) {}));
#elif defined(WEFT_CASE_send_handler)
  // expect: weft::on_send: the handler must be callable as f(bool)
  weft::select(weft::on_send(ch, 1, [] {}));
#elif defined(WEFT_CASE_default_handler)
  // expect: weft::on_default: the handler must be callable as f()
  weft::select(weft::on_default([](int) {}));
#elif defined(WEFT_CASE_done_handler)
  // expect: weft::on_done: the handler must be callable as f()
  weft::select(weft::on_done(ctx, [](bool) {}));
#elif defined(WEFT_CASE_ignored_send)
  // expect: ignoring return value
  ch.send(1);
#elif defined(WEFT_CASE_ignored_try_send)
  // expect: ignoring return value
  ch.try_send(1);
#elif defined(WEFT_CASE_ignored_spawn)
  // expect: the handle joins the fiber when destroyed
  weft::spawn([] {});
#elif defined(WEFT_CASE_ignored_after)
  // expect: dropping the After stops its timer
  weft::after(1s);
#else
#error "define WEFT_CASE_<name>"
#endif
}
