// weft's net package in one include: addresses, resolver, Conn, Listener,
// PacketConn, dial and listen.
#pragma once

#include "weft/net/addr.h"
#include "weft/net/conn.h"
#include "weft/net/resolve.h"
#include "weft/net/result.h"
