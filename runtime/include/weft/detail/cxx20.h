// weft's headers need C++20 (concepts, std::span, std::stop_token,
// designated initializers). Below it the first error would be one of those,
// deep in a header; this says what to do instead. Every public header
// reaches this one before any C++20 construct.
#pragma once

#if !defined(__cplusplus) || __cplusplus < 202002L
#error \
    "weft needs C++20 or later: compile with -std=c++20 (g++ 12 and clang++ 14 default to C++17; CMake: target_link_libraries(... weft::weft) sets it)"
#endif
