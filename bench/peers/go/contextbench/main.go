// The Go side of weft's context benchmarks: the same measurements with the
// standard library's context package, printed as JSON lines in runtimebench's
// format ({"name","workers","ns_per_op","min","max"}) for bench/compare.py.
// Standard library only; builds with Go 1.19.
//
//	ContextCreateCancel     WithCancel(parent) then cancel(), parent itself
//	                        cancelable, so the child registers in the
//	                        parent's children and leaves again; per pair
//	ContextCreateCancelUnderBackground
//	                        the same with Background() as the parent (Go
//	                        then registers nothing); no weft counterpart
//	ContextValue/D          ctx.Value(k) where k is bound D WithValue layers
//	                        up (the lookup walks all D); per lookup. No
//	                        scheduler involved: one row, "workers":0, as
//	                        weft's BM_ContextValue has no workers argument
//	ContextCancelFanout/N   N goroutines each parked in <-child.Done(), one
//	                        child of a common parent each: ns from the call
//	                        to the parent's cancel() until the last of them
//	                        has run (median of -rounds rounds)
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"sync"
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

func median(xs []float64) float64 {
	sort.Float64s(xs)
	mid := len(xs) / 2
	if len(xs)%2 == 0 {
		return (xs[mid-1] + xs[mid]) / 2
	}
	return xs[mid]
}

// Runs f (which returns ns per op) once to warm up, then reps times; reports
// median, min and max, as runtimebench does.
func measure(name string, workers, reps int, f func() float64) {
	if only != nil && !only.MatchString(name) {
		return
	}
	if workers > 0 {
		runtime.GOMAXPROCS(workers)
	}
	f()
	xs := make([]float64, 0, reps)
	for i := 0; i < reps; i++ {
		xs = append(xs, f())
	}
	m := median(xs)
	emit(row{name, workers, m, xs[0], xs[len(xs)-1]})
}

func createCancel(parent context.Context) func() float64 {
	return func() float64 {
		const n = 1000000
		t0 := time.Now()
		for i := 0; i < n; i++ {
			_, cancel := context.WithCancel(parent)
			cancel()
		}
		return float64(time.Since(t0).Nanoseconds()) / n
	}
}

// Keys compare by identity, like weft's ContextKey: a pointer to a distinct
// object per key.
type ctxKey struct{ name string }

var sink interface{}

func value(depth int) func() float64 {
	keys := make([]*ctxKey, depth)
	ctx := context.Background()
	for i := range keys {
		keys[i] = &ctxKey{"k" + strconv.Itoa(i)}
		ctx = context.WithValue(ctx, keys[i], i)
	}
	// The innermost context's view of the outermost binding: a walk over all
	// depth layers.
	k := keys[0]
	return func() float64 {
		const n = 2000000
		var v interface{}
		t0 := time.Now()
		for i := 0; i < n; i++ {
			v = ctx.Value(k)
		}
		d := time.Since(t0)
		if v.(int) != 0 {
			panic("wrong value")
		}
		sink = v
		return float64(d.Nanoseconds()) / n
	}
}

func fanoutRound(n int) float64 {
	parent, cancel := context.WithCancel(context.Background())
	ran := make([]time.Time, n)
	var parked, done sync.WaitGroup
	parked.Add(n)
	done.Add(n)
	for i := 0; i < n; i++ {
		child, childCancel := context.WithCancel(parent)
		go func(i int) {
			defer childCancel()
			parked.Done()
			<-child.Done()
			ran[i] = time.Now()
			done.Done()
		}(i)
	}
	parked.Wait()
	// Every goroutine is at, or one step from, its receive; let the last ones
	// park.
	time.Sleep(5 * time.Millisecond)
	t0 := time.Now()
	cancel()
	done.Wait()
	last := ran[0]
	for _, t := range ran[1:] {
		if t.After(last) {
			last = t
		}
	}
	return float64(last.Sub(t0).Nanoseconds())
}

func fanout(n, rounds int) func() float64 {
	return func() float64 {
		xs := make([]float64, rounds)
		for i := range xs {
			xs[i] = fanoutRound(n)
		}
		return median(xs)
	}
}

func main() {
	reps := flag.Int("reps", 5, "repetitions per measurement (median reported)")
	procs := flag.Int("procs", 0, "GOMAXPROCS; 0: measure with 1 and then 2, as runtimebench")
	rounds := flag.Int("rounds", 11, "cancel fan-out rounds per repetition (median taken)")
	filter := flag.String("filter", "", "run only the measurements whose name matches this regexp")
	flag.Parse()
	if *filter != "" {
		only = regexp.MustCompile(*filter)
	}
	if *reps < 1 || *rounds < 1 || *procs < 0 {
		fmt.Fprintln(os.Stderr, "contextbench: -reps and -rounds must be at least 1, -procs at least 0")
		os.Exit(2)
	}
	workers := []int{1, 2}
	if *procs > 0 {
		workers = []int{*procs}
	}
	// ContextValue (workers 0) runs under the last of these.
	cancelable, cancelParent := context.WithCancel(context.Background())
	defer cancelParent()
	for _, w := range workers {
		measure("ContextCreateCancel", w, *reps, createCancel(cancelable))
		measure("ContextCreateCancelUnderBackground", w, *reps, createCancel(context.Background()))
		measure("ContextCancelFanout/10000", w, *reps, fanout(10000, *rounds))
	}
	for _, d := range []int{1, 10, 100} {
		measure("ContextValue/"+strconv.Itoa(d), 0, *reps, value(d))
	}
}
