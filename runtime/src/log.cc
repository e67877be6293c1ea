#include "log.h"

#include "env.h"

#include <cxxabi.h>
#include <spdlog/sinks/stdout_color_sinks.h>

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <typeinfo>

namespace weft::detail {

spdlog::logger& log() {
  static spdlog::logger* logger = [] {
    auto sink = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
    auto* l = new spdlog::logger("weft", sink);  // lives for the whole process
    // In spdlog's order, so that the index is the level. Not
    // spdlog::level::from_str: it turns any word it does not know ("WARN",
    // "bogus") into "off", which silenced every warning.
    static const char* const levels[] = {"trace", "debug",    "info", "warn",
                                         "error", "critical", "off",  nullptr};
    static_assert(spdlog::level::off == 6);
    const auto level = env_word("WEFT_LOG", levels, "using warn");
    l->set_level(level ? static_cast<spdlog::level::level_enum>(*level) : spdlog::level::warn);
    l->set_pattern("[%H:%M:%S.%f] [weft] [%l] %v");
    return l;
  }();
  return *logger;
}

std::string current_exception_text() {
  const std::type_info* type = abi::__cxa_current_exception_type();
  if (!type) return {};
  int status = 0;
  char* demangled = abi::__cxa_demangle(type->name(), nullptr, nullptr, &status);
  std::string text = demangled ? demangled : type->name();
  std::free(demangled);
  try {
    throw;
  } catch (const std::exception& e) {
    text += ": ";
    text += e.what();
  } catch (...) {
  }
  return text;
}

void die_of_exception(const char* where) noexcept {
  std::fprintf(stderr, "weft: %s threw %s\n", where, current_exception_text().c_str());
  std::abort();
}

}  // namespace weft::detail
