// Context measurements, beside weft's bench/context_bench.cc:
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
//	ContextCustomChild/P    10,000 children of a parent of the user's own
//	                        type, derived and cancelled until the runtime's
//	                        watcher goroutines are gone: ns per child. P is
//	                        own-done (a Done channel of its own: a watcher
//	                        goroutine per child) or wraps (embeds a
//	                        cancelCtx and keeps its Done: no watcher).
//	ContextCustomChildFibers/P  goroutines alive over the baseline once all
//	                        children exist (a count, not ns)
package main

import (
	"context"
	"runtime"
	"strconv"
	"sync"
	"time"
)

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

// A context type of the user's own with a Done channel of its own.
type ownDoneCtx struct {
	done chan struct{}
}

func (c *ownDoneCtx) Deadline() (time.Time, bool) { return time.Time{}, false }
func (c *ownDoneCtx) Done() <-chan struct{}       { return c.done }
func (c *ownDoneCtx) Err() error                  { return nil }
func (c *ownDoneCtx) Value(key any) any           { return nil }

// One that embeds a cancelCtx and keeps its Done.
type wrapCtx struct{ context.Context }

const customChildren = 10000

var customAlive float64

func customChild(wraps bool) func() float64 {
	return func() float64 {
		var parent context.Context
		if wraps {
			inner, cancel := context.WithCancel(context.Background())
			defer cancel()
			parent = wrapCtx{inner}
		} else {
			parent = &ownDoneCtx{done: make(chan struct{})}
		}
		base := runtime.NumGoroutine()
		cancels := make([]context.CancelFunc, 0, customChildren)
		t0 := time.Now()
		for i := 0; i < customChildren; i++ {
			_, cancel := context.WithCancel(parent)
			cancels = append(cancels, cancel)
		}
		customAlive = float64(runtime.NumGoroutine() - base)
		for _, cancel := range cancels {
			cancel()
		}
		for runtime.NumGoroutine() > base {
			runtime.Gosched()
		}
		return float64(time.Since(t0).Nanoseconds()) / customChildren
	}
}
