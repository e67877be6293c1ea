#include "log.h"

#include <spdlog/sinks/stdout_color_sinks.h>

#include <cstdlib>

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

}  // namespace weft::detail
