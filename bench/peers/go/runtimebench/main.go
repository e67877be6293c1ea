// The Go side of bench/runtime_bench.cc and bench/footprint.cc: the same
// measurements with goroutines, printed as JSON lines for bench/compare.py.
// Standard library only.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

type row struct {
	Name    string  `json:"name"`
	Workers int     `json:"workers"`
	NsPerOp float64 `json:"ns_per_op"`
	Min     float64 `json:"min"`
	Max     float64 `json:"max"`
}

func emit(v interface{}) {
	b, _ := json.Marshal(v)
	fmt.Println(string(b))
}

var only *regexp.Regexp

// Runs f (which returns ns per op) reps times; reports median, min and max.
func measure(name string, workers, reps int, f func() float64) {
	if only != nil && !only.MatchString(name) {
		return
	}
	runtime.GOMAXPROCS(workers)
	f() // warm up
	var xs []float64
	for i := 0; i < reps; i++ {
		xs = append(xs, f())
	}
	m := median(xs) // sorts xs
	emit(row{name, workers, m, xs[0], xs[len(xs)-1]})
}

// Sorts xs and returns its median.
func median(xs []float64) float64 {
	sort.Float64s(xs)
	mid := len(xs) / 2
	if len(xs)%2 == 0 {
		return (xs[mid-1] + xs[mid]) / 2
	}
	return xs[mid]
}

// roundTrips sends n values through an echo goroutine on unbuffered
// channels, each answered before the next: the classic ping-pong.
func roundTrips(n int) {
	ping, pong := make(chan int), make(chan int)
	go func() {
		for v := range ping {
			pong <- v
		}
	}()
	for i := 0; i < n; i++ {
		ping <- i
		<-pong
	}
	close(ping)
}

func pingPong() float64 {
	const n = 1000000
	t0 := time.Now()
	roundTrips(n)
	return float64(time.Since(t0).Nanoseconds()) / n
}

// One ping-pong pair per P, all at once, as BM_PingPongPairs: ns per round
// trip of one pair.
func pingPongPairs(pairs int) func() float64 {
	return func() float64 {
		const trips = 200000
		var done sync.WaitGroup
		t0 := time.Now()
		for p := 0; p < pairs; p++ {
			done.Add(1)
			go func() {
				defer done.Done()
				roundTrips(trips)
			}()
		}
		done.Wait()
		return float64(time.Since(t0).Nanoseconds()) / trips
	}
}

// Gosched while a partner goroutine yields too, as BM_Yield.
func yield() float64 {
	const n = 1000000
	var stop atomic.Bool
	var done sync.WaitGroup
	done.Add(1)
	go func() {
		for !stop.Load() {
			runtime.Gosched()
		}
		done.Done()
	}()
	t0 := time.Now()
	for i := 0; i < n; i++ {
		runtime.Gosched()
	}
	d := time.Since(t0)
	stop.Store(true)
	done.Wait()
	return float64(d.Nanoseconds()) / n
}

// Gosched with nothing else runnable, as BM_YieldAlone.
func yieldAlone() float64 {
	const n = 1000000
	t0 := time.Now()
	for i := 0; i < n; i++ {
		runtime.Gosched()
	}
	return float64(time.Since(t0).Nanoseconds()) / n
}

func spawnJoin() float64 {
	const n = 1000000
	var wg sync.WaitGroup
	t0 := time.Now()
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() { wg.Done() }()
	}
	wg.Wait()
	return float64(time.Since(t0).Nanoseconds()) / n
}

func mutexContended(workers int) func() float64 {
	return func() float64 {
		const perG = 50000
		g := 4 * workers
		var mu sync.Mutex
		var wg sync.WaitGroup
		counter := 0
		t0 := time.Now()
		for i := 0; i < g; i++ {
			wg.Add(1)
			go func() {
				for k := 0; k < perG; k++ {
					mu.Lock()
					counter++
					mu.Unlock()
				}
				wg.Done()
			}()
		}
		wg.Wait()
		return float64(time.Since(t0).Nanoseconds()) / float64(g*perG)
	}
}

// The median overshoot of n sleeps (weft's BM_SleepOvershoot reports the same).
func sleepOvershoot(d time.Duration) func() float64 {
	return func() float64 {
		const n = 300
		over := make([]float64, n)
		for i := 0; i < n; i++ {
			t0 := time.Now()
			time.Sleep(d)
			over[i] = float64((time.Since(t0) - d).Nanoseconds())
		}
		sort.Float64s(over)
		return over[n/2]
	}
}

func rssMiB() float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			f := strings.Fields(line)
			kib, _ := strconv.ParseFloat(f[1], 64)
			return kib / 1024
		}
	}
	return -1
}

func cpuSeconds() float64 {
	var r syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &r)
	return float64(r.Utime.Sec+r.Stime.Sec) + float64(r.Utime.Usec+r.Stime.Usec)/1e6
}

func footprint(parked int, idle time.Duration) {
	runtime.GOMAXPROCS(2)
	before := rssMiB()
	never := make(chan int)
	var started, done sync.WaitGroup
	for i := 0; i < parked; i++ {
		started.Add(1)
		done.Add(1)
		go func() {
			started.Done()
			<-never
			done.Done()
		}()
	}
	// Every goroutine has run (its stack is in use) and is about to park.
	started.Wait()
	with := rssMiB()
	close(never)
	done.Wait()
	emit(map[string]interface{}{"name": "rss_parked_fibers", "fibers": parked, "mib": with - before,
		"kib_per_fiber": (with - before) * 1024 / float64(parked), "total_mib": with})

	time.Sleep(200 * time.Millisecond)
	c0, t0 := cpuSeconds(), time.Now()
	time.Sleep(idle)
	wall := time.Since(t0).Seconds()
	emit(map[string]interface{}{"name": "idle_cpu", "seconds": wall, "percent_of_a_core": 100 * (cpuSeconds() - c0) / wall})
}

// 1M time.AfterFunc timers an hour out, then all stopped; per timer.
func timerAddStop() float64 {
	const n = 1000000
	timers := make([]*time.Timer, n)
	f := func() {}
	t0 := time.Now()
	for i := range timers {
		timers[i] = time.AfterFunc(time.Hour, f)
	}
	for _, t := range timers {
		t.Stop()
	}
	return float64(time.Since(t0).Nanoseconds()) / n
}

// A server's deadlines per request, as bench/timer_bench.cc's
// BM_ConnDeadlinesPerRequest: a connection's read and write deadlines moved
// an idle timeout ahead, round-robin over conns connections; ns per request.
func connDeadlines(conns int) func() float64 {
	return func() float64 {
		cs := make([]net.Conn, 0, conns)
		peers := make([]int, 0, conns)
		defer func() {
			for _, c := range cs {
				c.Close()
			}
			for _, fd := range peers {
				syscall.Close(fd)
			}
		}()
		for i := 0; i < conns; i++ {
			fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
			if err != nil {
				panic(err)
			}
			f := os.NewFile(uintptr(fds[0]), "socketpair")
			c, err := net.FileConn(f)
			f.Close()
			if err != nil {
				panic(err)
			}
			cs = append(cs, c)
			peers = append(peers, fds[1])
		}
		const n = 1000000
		next := 0
		t0 := time.Now()
		for i := 0; i < n; i++ {
			c := cs[next]
			if next++; next == conns {
				next = 0
			}
			c.SetReadDeadline(time.Now().Add(60 * time.Second))
			c.SetWriteDeadline(time.Now().Add(60 * time.Second))
		}
		return float64(time.Since(t0).Nanoseconds()) / n
	}
}

// 100k goroutines sleep until distinct times spread over 100 ms; the median
// of how late they woke, in ns.
func timerBurstP50() float64 {
	const n = 100000
	late := make([]float64, n)
	var wg sync.WaitGroup
	start := time.Now().Add(20 * time.Millisecond)
	for i := 0; i < n; i++ {
		wg.Add(1)
		due := start.Add(time.Duration(100000*int64(i)/n) * time.Microsecond)
		go func(i int, due time.Time) {
			time.Sleep(time.Until(due))
			late[i] = float64(time.Since(due).Nanoseconds())
			wg.Done()
		}(i, due)
	}
	wg.Wait()
	sort.Float64s(late)
	return late[n/2]
}

// Two goroutines ping-pong a byte over two pipes through the netpoller; per
// round trip (two wake-ups), as BM_FdWakeRoundTrip.
func fdWakeRoundTrip() float64 {
	const n = 50000
	ar, aw, _ := os.Pipe()
	br, bw, _ := os.Pipe()
	defer func() {
		for _, f := range []*os.File{ar, aw, br, bw} {
			f.Close()
		}
	}()
	go func() {
		buf := make([]byte, 1)
		for i := 0; i < n; i++ {
			ar.Read(buf)
			bw.Write([]byte{'y'})
		}
	}()
	buf := make([]byte, 1)
	t0 := time.Now()
	for i := 0; i < n; i++ {
		aw.Write([]byte{'x'})
		br.Read(buf)
	}
	return float64(time.Since(t0).Nanoseconds()) / n
}

func main() {
	reps := flag.Int("reps", 5, "repetitions per measurement (median reported)")
	foot := flag.Bool("footprint", false, "measure RSS of parked goroutines and idle CPU instead")
	parked := flag.Int("parked", 100000, "goroutines parked for the RSS measurement")
	idle := flag.Duration("idle", 5*time.Second, "idle window for the CPU measurement")
	filter := flag.String("filter", "", "run only the measurements whose name matches this regexp")
	rounds := flag.Int("rounds", 11, "context cancel fan-out rounds per repetition (median taken)")
	workerList := flag.String("workers", "1,2", "GOMAXPROCS values, comma-separated (weft's WEFT_BENCH_WORKERS)")
	flag.Parse()
	if *reps < 1 || *rounds < 1 {
		fmt.Fprintln(os.Stderr, "runtimebench: -reps and -rounds must be at least 1")
		os.Exit(2)
	}
	if *filter != "" {
		only = regexp.MustCompile(*filter)
	}
	var workers []int
	for _, f := range strings.Split(*workerList, ",") {
		w, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || w < 1 {
			fmt.Fprintf(os.Stderr, "runtimebench: -workers wants positive numbers, got %q\n", f)
			os.Exit(2)
		}
		workers = append(workers, w)
	}
	if *foot {
		footprint(*parked, *idle)
		return
	}
	cancelable, cancelParent := context.WithCancel(context.Background())
	defer cancelParent()
	for _, w := range workers {
		measure("ChannelPingPong", w, *reps, pingPong)
		measure("PingPongPairs", w, *reps, pingPongPairs(w))
		measure("Yield", w, *reps, yield)
		measure("YieldAlone", w, *reps, yieldAlone)
		measure("SpawnJoin", w, *reps, spawnJoin)
		measure("MutexContended", w, *reps, mutexContended(w))
		measure("TimerBurstP50", w, *reps, timerBurstP50)
		measure("FdWakeRoundTrip", w, *reps, fdWakeRoundTrip)
		measure("ContextCreateCancel", w, *reps, createCancel(cancelable))
		measure("ContextCreateCancelUnderBackground", w, *reps, createCancel(context.Background()))
		measure("ContextCancelFanout/10000", w, *reps, fanout(10000, *rounds))
		for _, p := range []string{"own-done", "wraps"} {
			measure("ContextCustomChild/"+p, w, *reps, customChild(p == "wraps"))
			measure("ContextCustomChildFibers/"+p, w, 1, func() float64 { return customAlive })
		}
	}
	for _, d := range []int{1, 10, 100} {
		measure("ContextValue/"+strconv.Itoa(d), 0, *reps, value(d))
	}
	measure("TimerAddStop", 1, *reps, timerAddStop)
	for _, c := range []int{1, 4000} {
		measure("ConnDeadlinesPerRequest/"+strconv.Itoa(c), 1, *reps, connDeadlines(c))
	}
	for _, us := range []int{50, 200, 1000, 10000} {
		measure("SleepOvershoot/"+strconv.Itoa(us)+"us", 2, *reps, sleepOvershoot(time.Duration(us)*time.Microsecond))
	}
}
