#include "log.h"

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
    const char* level = std::getenv("WEFT_LOG");
    l->set_level(level ? spdlog::level::from_str(level) : spdlog::level::warn);
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
