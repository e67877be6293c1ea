// Go peer servers for weft's request/response throughput benchmarks
// (bench/load.py): the same three protocols as weft's examples/echo.cc,
// http_hello.cc and resp_ping.cc, written the way a Go program would write
// them (a goroutine per connection, net/http for HTTP). Standard library only;
// builds with Go 1.19.
//
//	-mode http   HTTP/1.1 keep-alive responder (net/http): every request gets
//	             200 "Hello, World!\n" as text/plain
//	-mode resp   RESP PING responder: arrays (*1\r\n$4\r\nPING\r\n) and inline
//	             commands (PING\r\n); pipelined commands that arrive together
//	             are all answered with one write
//	-mode echo   writes back every byte it reads
//	-mode proxy  joins each connection to a new one to -upstream, both ways,
//	             with io.Copy (splice(2) between TCP sockets since Go 1.11),
//	             half-closing each side when the other ends: weft's
//	             examples/tcp_proxy.cc
//
// Prints "listening on HOST:PORT" (the bound address) on stdout once the
// listener is open; SIGINT or SIGTERM closes the listener and every
// connection and exits 0.
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

var helloBody = []byte("Hello, World!\n")

// How long shutdown waits for connections to finish before it gives up.
const shutdownGrace = 3 * time.Second

func main() {
	mode := flag.String("mode", "http", "http, resp, echo or proxy")
	upstream := flag.String("upstream", "", "proxy: the address each connection is joined to")
	addr := flag.String("addr", "127.0.0.1:8080", "address to listen on (port 0: any free port)")
	procs := flag.Int("procs", 0, "GOMAXPROCS (0: Go's default, the number of CPUs)")
	date := flag.Bool("date", false, "http: let net/http add its Date header (off: the same bytes as weft's and the epoll peer's response)")
	flag.Parse()
	if *procs > 0 {
		runtime.GOMAXPROCS(*procs)
	}

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "listen:", err)
		os.Exit(1)
	}

	var serve func(net.Listener) error
	var shutdown func()
	switch *mode {
	case "http":
		serve, shutdown = httpServer(*date)
	case "resp":
		serve, shutdown = streamServer(serveResp)
	case "echo":
		serve, shutdown = streamServer(serveEcho)
	case "proxy":
		if *upstream == "" {
			fmt.Fprintln(os.Stderr, "-mode proxy needs -upstream HOST:PORT")
			os.Exit(2)
		}
		serve, shutdown = streamServer(func(c net.Conn) { serveProxy(c, *upstream) })
	default:
		fmt.Fprintf(os.Stderr, "unknown -mode %q (http, resp, echo or proxy)\n", *mode)
		os.Exit(2)
	}

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	served := make(chan error, 1)
	go func() { served <- serve(ln) }()
	fmt.Printf("listening on %s\n", ln.Addr())

	select {
	case <-sigs:
		shutdown()
		<-served
	case err := <-served:
		fmt.Fprintln(os.Stderr, "serve:", err)
		os.Exit(1)
	}
}

// net/http with one handler. Content-Type and Content-Length are set so that
// net/http adds nothing else except Date, which -date=false suppresses (a nil
// header value, net/http's documented way): the response is then byte for
// byte "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length:
// 14\r\n\r\nHello, World!\n".
func httpServer(date bool) (func(net.Listener) error, func()) {
	length := []string{strconv.Itoa(len(helloBody))}
	ctype := []string{"text/plain"}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h["Content-Type"] = ctype
		h["Content-Length"] = length
		if !date {
			h["Date"] = nil
		}
		w.Write(helloBody)
	})
	srv := &http.Server{Handler: handler, ErrorLog: nil}
	serve := func(ln net.Listener) error {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	}
	shutdown := func() {
		ctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
		defer cancel()
		if srv.Shutdown(ctx) != nil {
			srv.Close()
		}
	}
	return serve, shutdown
}

// A goroutine per connection running handle; shutdown closes the listener and
// every open connection and waits for the goroutines.
func streamServer(handle func(net.Conn)) (func(net.Listener) error, func()) {
	var mu sync.Mutex
	conns := map[net.Conn]struct{}{}
	var wg sync.WaitGroup
	var ln net.Listener
	closing := false

	serve := func(l net.Listener) error {
		mu.Lock()
		ln = l
		mu.Unlock()
		for {
			c, err := l.Accept()
			if err != nil {
				mu.Lock()
				done := closing
				mu.Unlock()
				if done {
					return nil
				}
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					continue
				}
				return err
			}
			mu.Lock()
			if closing {
				mu.Unlock()
				c.Close()
				return nil
			}
			conns[c] = struct{}{}
			wg.Add(1)
			mu.Unlock()
			go func() {
				defer wg.Done()
				handle(c)
				c.Close()
				mu.Lock()
				delete(conns, c)
				mu.Unlock()
			}()
		}
	}
	shutdown := func() {
		mu.Lock()
		closing = true
		if ln != nil {
			ln.Close()
		}
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(shutdownGrace):
		}
	}
	return serve, shutdown
}

// As a Go proxy is written: io.Copy each way, and a half-close passes an
// end of stream on. Closing c (shutdown) ends both copies.
func serveProxy(c net.Conn, upstream string) {
	up, err := net.Dial("tcp", upstream)
	if err != nil {
		fmt.Fprintln(os.Stderr, "dial:", err)
		return
	}
	defer up.Close()
	upward := make(chan struct{})
	go func() {
		io.Copy(up, c)
		up.(*net.TCPConn).CloseWrite()
		close(upward)
	}()
	io.Copy(c, up)
	c.(*net.TCPConn).CloseWrite()
	<-upward
}

func serveEcho(c net.Conn) {
	buf := make([]byte, 16<<10)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// flushingReader flushes the replies queued in w before every read from the
// connection, that is, whenever the bufio.Reader on top has used up what it
// had: everything answered so far goes out in one write just before the
// server waits for more (also when the buffer ends in a partial command).
type flushingReader struct {
	c net.Conn
	w *bufio.Writer
}

func (f flushingReader) Read(p []byte) (int, error) {
	if f.w.Buffered() > 0 {
		if err := f.w.Flush(); err != nil {
			return 0, err
		}
	}
	return f.c.Read(p)
}

// RESP: reads one command at a time from a bufio.Reader and queues its reply
// in a bufio.Writer, which is flushed when the reader needs more input: one
// write per batch of pipelined commands that arrived together.
func serveResp(c net.Conn) {
	w := bufio.NewWriterSize(c, 16<<10)
	r := bufio.NewReaderSize(flushingReader{c, w}, 16<<10)
	var args [][]byte
	var scratch []byte
	for {
		var err error
		args, scratch, err = readCommand(r, args[:0], scratch[:0])
		if err != nil {
			if err != io.EOF {
				w.WriteString("-ERR " + err.Error() + "\r\n")
				w.Flush()
			}
			return
		}
		if len(args) > 0 {
			reply(w, args)
		}
	}
}

type protocolError string

func (e protocolError) Error() string { return "Protocol error: " + string(e) }

// The longest line (inline command or array/bulk header) and bulk string
// accepted.
const (
	maxLine = 64 << 10
	maxBulk = 512 << 20
)

// readLine returns the next line without its "\r\n" (or bare "\n"); the slice
// is only valid until the next read.
func readLine(r *bufio.Reader) ([]byte, error) {
	line, err := r.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		return nil, protocolError("line too long")
	}
	if err != nil {
		if err == io.EOF && len(line) > 0 {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, nil
}

// readCommand appends the arguments of the next command to args; bulk strings
// are copied into scratch (reused across commands, so that a PING allocates
// nothing once the connection is warm).
func readCommand(r *bufio.Reader, args [][]byte, scratch []byte) ([][]byte, []byte, error) {
	line, err := readLine(r)
	if err != nil {
		return nil, scratch, err
	}
	if len(line) == 0 || line[0] != '*' {
		// Inline command: words separated by spaces.
		for _, f := range strings.Fields(string(line)) {
			args = append(args, []byte(f))
		}
		return args, scratch, nil
	}
	n, err := strconv.Atoi(string(line[1:]))
	if err != nil || n > 1<<20 {
		return nil, scratch, protocolError("invalid multibulk length")
	}
	for i := 0; i < n; i++ {
		line, err := readLine(r)
		if err != nil {
			return nil, scratch, err
		}
		if len(line) == 0 || line[0] != '$' {
			return nil, scratch, protocolError("expected '$'")
		}
		size, err := strconv.Atoi(string(line[1:]))
		if err != nil || size < 0 || size > maxBulk {
			return nil, scratch, protocolError("invalid bulk length")
		}
		start := len(scratch)
		for cap(scratch)-start < size+2 {
			scratch = append(scratch[:cap(scratch)], 0)
		}
		scratch = scratch[:start+size+2]
		if _, err := io.ReadFull(r, scratch[start:]); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, scratch, err
		}
		args = append(args, scratch[start:start+size:start+size])
	}
	return args, scratch, nil
}

func writeBulk(w *bufio.Writer, b []byte) {
	w.WriteByte('$')
	w.WriteString(strconv.Itoa(len(b)))
	w.WriteString("\r\n")
	w.Write(b)
	w.WriteString("\r\n")
}

// PING [message]; CONFIG GET name (answered with an empty value, so that
// redis-benchmark's start-up query does not warn); anything else is an error.
var (
	pingCmd   = []byte("PING")
	configCmd = []byte("CONFIG")
	getArg    = []byte("GET")
)

func reply(w *bufio.Writer, args [][]byte) {
	switch {
	case bytes.EqualFold(args[0], pingCmd) && len(args) == 1:
		w.WriteString("+PONG\r\n")
	case bytes.EqualFold(args[0], pingCmd) && len(args) == 2:
		writeBulk(w, args[1])
	case bytes.EqualFold(args[0], configCmd) && len(args) == 3 &&
		bytes.EqualFold(args[1], getArg):
		w.WriteString("*2\r\n")
		writeBulk(w, args[2])
		writeBulk(w, nil)
	default:
		w.WriteString("-ERR unknown command '" + string(args[0]) + "'\r\n")
	}
}
