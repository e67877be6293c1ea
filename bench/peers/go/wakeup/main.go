// The Go side of weft's wakeup-latency tool: how long after a context is
// canceled (or a deadline passes) a goroutine parked in a network call gets
// to run again, with Go's own pattern: a watcher goroutine per operation that
// waits for ctx.Done() and then sets a deadline in the past on the conn or
// listener (net.Dialer.DialContext does the same internally for connect).
// Everything runs over loopback. Standard library only; builds with Go 1.19.
//
//	cancel-read     a goroutine parked in conn.Read on an idle TCP connection;
//	                cancel() -> the reader returns (one connection, reused)
//	cancel-accept   parked in TCPListener.Accept; cancel() -> Accept returns
//	cancel-dial     parked in Dialer.DialContext to a listener whose accept
//	                queue is full (SYNs are dropped, connect hangs); cancel()
//	                -> DialContext returns
//	deadline-read   SetReadDeadline(now+D) on an idle connection; overshoot =
//	                when Read returned - the deadline
//	fanout-N        N readers, each on its own idle connection with its own
//	                child context and watcher; cancel() of the common parent
//	                -> the last reader returns (one sample per round)
//
// Latencies: the canceling goroutine takes time.Now() just before cancel();
// the woken goroutine takes time.Now() as soon as its call returns.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"net"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// A deadline in the past, as Go's net package uses to interrupt calls.
var past = time.Unix(1, 0)

// How long the scenario waits after its goroutines said they are about to
// park before it cancels; set by -settle.
var settle time.Duration

// How long one wakeup may take before the scenario gives up.
const stuck = 5 * time.Second

type row struct {
	Scenario string `json:"scenario"`
	Backend  string `json:"backend"`
	Runtime  string `json:"runtime"`
	N        int    `json:"n"`
	// null where n is too small for the percentile to be more than the
	// maximum (see supported).
	P50  *float64 `json:"p50_us"`
	P90  *float64 `json:"p90_us"`
	P99  *float64 `json:"p99_us"`
	P999 *float64 `json:"p999_us"`
	Max  float64  `json:"max_us"`
	// Every sample, sorted, so that weft-wakeup draws Go's curve from the
	// same data, the same way, as its own.
	Samples []float64 `json:"samples_us"`
}

// supported: whether n samples say anything about percentile p that the
// maximum does not, i.e. at least one sample lies above it (p99 needs 100).
func supported(p float64, n int) bool {
	return float64(n)*(1-p) >= 1-1e-9
}

// Nearest rank: the smallest sample with at least p of all samples at or
// below it; nil when n is too small for p.
func percentile(sortedUs []float64, p float64) *float64 {
	if !supported(p, len(sortedUs)) {
		return nil
	}
	rank := int(math.Ceil(p * float64(len(sortedUs))))
	if rank < 1 {
		rank = 1
	}
	if rank > len(sortedUs) {
		rank = len(sortedUs)
	}
	v := sortedUs[rank-1]
	return &v
}

func summarize(name string, xs []time.Duration) row {
	sort.Slice(xs, func(i, j int) bool { return xs[i] < xs[j] })
	us := make([]float64, len(xs))
	for i, x := range xs {
		us[i] = float64(x.Nanoseconds()) / 1e3
	}
	return row{Scenario: name, Backend: "go-netpoll", Runtime: "go", N: len(us),
		P50: percentile(us, 0.50), P90: percentile(us, 0.90), P99: percentile(us, 0.99),
		P999: percentile(us, 0.999), Max: us[len(us)-1], Samples: us}
}

// ---------------------------------------------------------------------------
// Idle loopback connections.

// raiseNofile makes sure at least need descriptors can be open.
func raiseNofile(need uint64) error {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return err
	}
	if r.Cur >= need {
		return nil
	}
	want := r
	want.Cur = need
	if want.Max < need {
		want.Max = need
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err != nil {
		return fmt.Errorf("needs %d open files, RLIMIT_NOFILE is %d (hard %d) and raising it failed: %v "+
			"(raise the hard limit, e.g. `ulimit -Hn %d` as root, or lower N)", need, r.Cur, r.Max, err, need)
	}
	return nil
}

// A raw listening socket on 127.0.0.1 with the given backlog, never accepted
// from: connections that complete the handshake wait in its accept queue,
// established, and hold no descriptor of ours.
type rawListener struct {
	fd   int
	addr string
}

func listenRaw(backlog int) (*rawListener, error) {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	sa := &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}
	if err = syscall.Bind(fd, sa); err == nil {
		err = syscall.Listen(fd, backlog)
	}
	var got syscall.Sockaddr
	if err == nil {
		got, err = syscall.Getsockname(fd)
	}
	if err != nil {
		syscall.Close(fd)
		return nil, err
	}
	return &rawListener{fd, "127.0.0.1:" + strconv.Itoa(got.(*syscall.SockaddrInet4).Port)}, nil
}

func (l *rawListener) Close() { syscall.Close(l.fd) }

func somaxconn() int {
	b, err := os.ReadFile("/proc/sys/net/core/somaxconn")
	if err != nil {
		return 128
	}
	v, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || v < 1 {
		return 128
	}
	return v
}

// idleConns returns n established loopback TCP connections on which nothing
// will ever arrive, and a function that closes them. Their far ends stay
// unaccepted in the accept queues of raw listeners (one descriptor per
// 512 connections), so n connections cost about n descriptors, and
// weft-wakeup builds its fixture the same way: to the reader such a socket is
// like any idle connection, established with nothing to read.
func idleConns(n int) ([]*net.TCPConn, func(), error) {
	const slack = 64
	var conns []*net.TCPConn
	var raws []*rawListener
	cleanup := func() {
		for _, c := range conns {
			c.Close()
		}
		for _, l := range raws {
			l.Close()
		}
	}
	if err := raiseNofile(uint64(n + slack)); err != nil {
		return nil, nil, err
	}
	per := somaxconn()
	if per > 512 { // as weft-wakeup, whose watchdog minds one long close
		per = 512
	}
	for len(conns) < n {
		l, err := listenRaw(per)
		if err != nil {
			cleanup()
			return nil, nil, err
		}
		raws = append(raws, l)
		for k := 0; k < per && len(conns) < n; k++ {
			c, err := net.DialTimeout("tcp", l.addr, 2*time.Second)
			if err != nil {
				cleanup()
				return nil, nil, fmt.Errorf("filling an accept queue of %d: %v", per, err)
			}
			conns = append(conns, c.(*net.TCPConn))
		}
	}
	return conns, cleanup, nil
}

// ---------------------------------------------------------------------------
// Per-operation scenarios: one parked goroutine, one cancel, n times.

// watch is Go's pattern for canceling a blocking network call: once ctx is
// done, interrupt(past) makes the parked call return with a timeout.
func watch(ctx context.Context, interrupt func(time.Time) error, exited chan<- struct{}) {
	<-ctx.Done()
	interrupt(past)
	exited <- struct{}{}
}

type op struct {
	setup func() error
	// call blocks until interrupted and returns an error unless that is how
	// it ended.
	call func(ctx context.Context) error
	// reset undoes the interruption before the next sample.
	reset   func()
	cleanup func()
}

// cancelSamples runs warm untimed samples, then n timed ones, of: start call
// in a goroutine, let it park, cancel, wait for it to return.
func cancelSamples(o op, n, warm int) ([]time.Duration, error) {
	if err := o.setup(); err != nil {
		return nil, err
	}
	defer o.cleanup()
	type ret struct {
		at  time.Time
		err error
	}
	rets := make(chan ret, 1)
	parking := make(chan struct{}, 1)
	var xs []time.Duration
	for i := 0; i < warm+n; i++ {
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			parking <- struct{}{}
			err := o.call(ctx)
			rets <- ret{time.Now(), err}
		}()
		<-parking
		time.Sleep(settle)
		t0 := time.Now()
		cancel()
		var r ret
		select {
		case r = <-rets:
		case <-time.After(stuck):
			return nil, fmt.Errorf("the parked call did not return within %v of cancel()", stuck)
		}
		if r.err != nil {
			return nil, r.err
		}
		if r.at.Before(t0) {
			return nil, errors.New("the call returned before cancel(): it was not parked")
		}
		o.reset()
		if i >= warm {
			xs = append(xs, r.at.Sub(t0))
		}
	}
	return xs, nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

func cancelRead(n, warm int) ([]time.Duration, error) {
	var c *net.TCPConn
	var done func()
	buf := make([]byte, 64)
	exited := make(chan struct{}, 1)
	return cancelSamples(op{
		setup: func() (err error) {
			var cs []*net.TCPConn
			cs, done, err = idleConns(1)
			if err == nil {
				c = cs[0]
			}
			return err
		},
		call: func(ctx context.Context) error {
			go watch(ctx, c.SetReadDeadline, exited)
			_, err := c.Read(buf)
			if !isTimeout(err) {
				return fmt.Errorf("Read on an idle connection: want a timeout, got %v", err)
			}
			return nil
		},
		reset: func() {
			<-exited
			c.SetReadDeadline(time.Time{})
		},
		cleanup: func() { done() },
	}, n, warm)
}

func cancelAccept(n, warm int) ([]time.Duration, error) {
	var ln *net.TCPListener
	exited := make(chan struct{}, 1)
	return cancelSamples(op{
		setup: func() error {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err == nil {
				ln = l.(*net.TCPListener)
			}
			return err
		},
		call: func(ctx context.Context) error {
			go watch(ctx, ln.SetDeadline, exited)
			c, err := ln.Accept()
			if err == nil {
				c.Close()
				return errors.New("Accept returned a connection nobody made")
			}
			if !isTimeout(err) {
				return fmt.Errorf("Accept: want a timeout, got %v", err)
			}
			return nil
		},
		reset: func() {
			<-exited
			ln.SetDeadline(time.Time{})
		},
		cleanup: func() { ln.Close() },
	}, n, warm)
}

// fullListener makes a listener whose connects hang: backlog 0, never
// accepted from, its accept queue filled with established connections. Linux
// drops a SYN to a listener whose accept queue is full (before any SYN-cookie
// decision), so connect() waits for its SYN retransmits (1 s, 3 s, ...).
func fullListener() (*rawListener, []net.Conn, error) {
	l, err := listenRaw(0)
	if err != nil {
		return nil, nil, err
	}
	var fill []net.Conn
	fail := func(err error) (*rawListener, []net.Conn, error) {
		for _, c := range fill {
			c.Close()
		}
		l.Close()
		return nil, nil, err
	}
	for len(fill) < 64 {
		c, err := net.DialTimeout("tcp", l.addr, 200*time.Millisecond)
		if err != nil {
			if !isTimeout(err) {
				return fail(fmt.Errorf("filling the accept queue: %v", err))
			}
			break
		}
		fill = append(fill, c)
	}
	if len(fill) == 64 {
		return fail(errors.New("64 connects to a backlog-0 listener all completed: " +
			"this kernel does not make connect hang on a full accept queue"))
	}
	// The queue is full: check that a connect now hangs, twice.
	for i := 0; i < 2; i++ {
		c, err := net.DialTimeout("tcp", l.addr, 300*time.Millisecond)
		if err == nil {
			c.Close()
			return fail(errors.New("a connect to the full listener completed: it does not hang"))
		}
		if !isTimeout(err) {
			return fail(fmt.Errorf("a connect to the full listener: want it to hang, got %v", err))
		}
	}
	return l, fill, nil
}

func cancelDial(n, warm int) ([]time.Duration, error) {
	var l *rawListener
	var fill []net.Conn
	var d net.Dialer
	return cancelSamples(op{
		setup: func() (err error) {
			l, fill, err = fullListener()
			return err
		},
		call: func(ctx context.Context) error {
			c, err := d.DialContext(ctx, "tcp", l.addr)
			if err == nil {
				c.Close()
				return errors.New("DialContext to the full listener connected")
			}
			// Go 1.19 reports "operation was canceled" (net's errCanceled),
			// later versions also wrap context.Canceled.
			if !errors.Is(err, context.Canceled) && !strings.Contains(err.Error(), "operation was canceled") {
				return fmt.Errorf("DialContext: want context.Canceled, got %v", err)
			}
			return nil
		},
		reset: func() {},
		cleanup: func() {
			for _, c := range fill {
				c.Close()
			}
			l.Close()
		},
	}, n, warm)
}

func deadlineRead(d time.Duration) func(n, warm int) ([]time.Duration, error) {
	return func(n, warm int) ([]time.Duration, error) {
		cs, done, err := idleConns(1)
		if err != nil {
			return nil, err
		}
		defer done()
		c := cs[0]
		buf := make([]byte, 64)
		var xs []time.Duration
		for i := 0; i < warm+n; i++ {
			due := time.Now().Add(d)
			c.SetReadDeadline(due)
			_, err := c.Read(buf)
			at := time.Now()
			if !isTimeout(err) {
				return nil, fmt.Errorf("Read on an idle connection: want a timeout, got %v", err)
			}
			if i >= warm {
				xs = append(xs, at.Sub(due))
			}
		}
		return xs, nil
	}
}

// ---------------------------------------------------------------------------
// Fan-out: one parent, n readers on n connections, one sample per round.

func fanout(conns int, rounds int) func(n, warm int) ([]time.Duration, error) {
	return func(_, warm int) ([]time.Duration, error) {
		cs, done, err := idleConns(conns)
		if err != nil {
			return nil, err
		}
		defer done()
		returned := make([]time.Time, conns)
		errs := make(chan error, conns)
		parking := make(chan struct{}, conns)
		finished := make(chan struct{}, conns)
		exited := make(chan struct{}, conns)
		var xs []time.Duration
		for r := 0; r < warm+rounds; r++ {
			parent, cancel := context.WithCancel(context.Background())
			for i, c := range cs {
				ctx, cancelChild := context.WithCancel(parent)
				go watch(ctx, c.SetReadDeadline, exited)
				go func(i int, c *net.TCPConn, cancelChild context.CancelFunc) {
					defer cancelChild()
					var buf [64]byte
					parking <- struct{}{}
					_, err := c.Read(buf[:])
					returned[i] = time.Now()
					if !isTimeout(err) {
						errs <- fmt.Errorf("Read on an idle connection: want a timeout, got %v", err)
					}
					finished <- struct{}{}
				}(i, c, cancelChild)
			}
			for range cs {
				<-parking
			}
			// The last readers are between their signal and the park.
			time.Sleep(settle + 10*time.Millisecond + time.Duration(conns)*time.Microsecond)
			t0 := time.Now()
			cancel()
			deadline := time.After(stuck)
			for i := 0; i < 2*conns; i++ {
				select {
				case <-finished:
				case <-exited:
				case <-deadline:
					return nil, fmt.Errorf("not all %d readers and watchers returned within %v of cancel()",
						conns, stuck)
				}
			}
			select {
			case err := <-errs:
				return nil, err
			default:
			}
			first, last := returned[0], returned[0]
			for _, t := range returned {
				if t.After(last) {
					last = t
				}
				if t.Before(first) {
					first = t
				}
			}
			if first.Before(t0) {
				return nil, errors.New("a reader returned before cancel(): it was not parked")
			}
			for _, c := range cs {
				c.SetReadDeadline(time.Time{})
			}
			if r >= warm {
				xs = append(xs, last.Sub(t0))
			}
		}
		return xs, nil
	}
}

// ---------------------------------------------------------------------------

type scenario struct {
	name string
	run  func(n, warm int) ([]time.Duration, error)
}

func main() {
	all := "cancel-read,cancel-accept,cancel-dial,deadline-read,fanout-1000,fanout-10000"
	names := flag.String("scenarios", all, "comma-separated scenarios to run")
	n := flag.Int("n", 1000, "samples for the per-operation scenarios")
	rounds := flag.Int("rounds", 100, "rounds (samples) for the fan-out scenarios")
	procs := flag.Int("procs", 0, "GOMAXPROCS; 0: the runtime's default")
	asJSON := flag.Bool("json", false, "print one JSON array of rows instead of a table")
	deadline := flag.Duration("deadline", time.Millisecond, "D for deadline-read")
	flag.DurationVar(&settle, "settle", 200*time.Microsecond, "wait after the parked goroutine starts its call, before canceling")
	limit := flag.Duration("timeout", 30*time.Second, "a scenario that takes longer fails")
	flag.Parse()
	if *n < 1 || *rounds < 1 || *procs < 0 {
		fmt.Fprintln(os.Stderr, "wakeup: -n and -rounds must be at least 1, -procs at least 0")
		os.Exit(2)
	}
	if *procs > 0 {
		runtime.GOMAXPROCS(*procs)
	}
	known := map[string]scenario{}
	for _, s := range []scenario{
		{"cancel-read", cancelRead},
		{"cancel-accept", cancelAccept},
		{"cancel-dial", cancelDial},
		{"deadline-read", deadlineRead(*deadline)},
		{"fanout-1000", fanout(1000, *rounds)},
		{"fanout-10000", fanout(10000, *rounds)},
	} {
		known[s.name] = s
	}
	var run []scenario
	for _, name := range strings.Split(*names, ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		s, ok := known[name]
		if !ok {
			fmt.Fprintf(os.Stderr, "wakeup: unknown scenario %q (known: %s)\n", name, all)
			os.Exit(2)
		}
		run = append(run, s)
	}

	rows := []row{}
	failed := false
	for _, s := range run {
		s := s
		warm := *n / 10
		if warm < 10 {
			warm = 10
		}
		if strings.HasPrefix(s.name, "fanout-") {
			warm = 1
		}
		type result struct {
			xs  []time.Duration
			err error
		}
		res := make(chan result, 1)
		go func() {
			xs, err := s.run(*n, warm)
			res <- result{xs, err}
		}()
		select {
		case r := <-res:
			if r.err != nil {
				fmt.Fprintf(os.Stderr, "wakeup: %s: %v\n", s.name, r.err)
				failed = true
				continue
			}
			rows = append(rows, summarize(s.name, r.xs))
		case <-time.After(*limit):
			// Its goroutines stay parked; the other scenarios still run.
			fmt.Fprintf(os.Stderr, "wakeup: %s: did not finish within %v, abandoned\n", s.name, *limit)
			failed = true
		}
	}

	if *asJSON {
		b, _ := json.MarshalIndent(rows, "", "  ")
		fmt.Println(string(b))
	} else {
		fmt.Printf("go wakeup latency, GOMAXPROCS=%d, %s, us; - where n is too small\n",
			runtime.GOMAXPROCS(0), runtime.Version())
		fmt.Printf("%-15s %-11s %-8s %6s %10s %10s %10s %10s %10s\n",
			"scenario", "backend", "runtime", "n", "p50_us", "p90_us", "p99_us", "p999_us", "max_us")
		cell := func(v *float64) string {
			if v == nil {
				return "-"
			}
			return fmt.Sprintf("%.1f", *v)
		}
		for _, r := range rows {
			fmt.Printf("%-15s %-11s %-8s %6d %10s %10s %10s %10s %10.1f\n",
				r.Scenario, r.Backend, r.Runtime, r.N, cell(r.P50), cell(r.P90), cell(r.P99),
				cell(r.P999), r.Max)
		}
	}
	if failed {
		os.Exit(1)
	}
}
