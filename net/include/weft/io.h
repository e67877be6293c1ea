// Go's io.Copy between two connections.
#pragma once

#include "weft/context.h"
#include "weft/net/conn.h"

namespace weft::io {

// Copies from src to dst until src's EOF, and returns the bytes copied:
// success at EOF (Go's io.Copy returns a nil error then), else the first
// read or write error with the count so far. Between two stream sockets
// (TCP, Unix) the bytes go through a pipe with splice(2), as Go's
// TCPConn.ReadFrom does, never through user memory; otherwise through a
// 32 KiB buffer. Deadlines set on either connection apply.
net::IoResult copy(net::Conn& dst, net::Conn& src);
// The same, ended by ctx (its error, with the count so far); a cancel
// touches only this copy's operations, as with read(ctx, ...).
net::IoResult copy(const Context& ctx, net::Conn& dst, net::Conn& src);

}  // namespace weft::io
