package ratelimit

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
)

func TestCounterTrip(t *testing.T) {
	c := NewCounter[string](2)
	for i := 1; i <= 2; i++ {
		if ok, n := c.Acquire("a"); !ok || n != i {
			t.Fatalf("Acquire #%d = %v, %d", i, ok, n)
		}
	}
	if ok, n := c.Acquire("a"); ok || n != 2 {
		t.Errorf("Acquire beyond max = %v, %d, want false, 2", ok, n)
	}
	if ok, _ := c.Acquire("b"); !ok {
		t.Error("key b refused because of key a")
	}
	c.Release("a")
	if ok, n := c.Acquire("a"); !ok || n != 2 {
		t.Errorf("Acquire after Release = %v, %d, want true, 2", ok, n)
	}
}

func TestCounterUnder(t *testing.T) {
	c := NewCounter[string](3)
	for range 100 {
		for range 3 {
			if ok, _ := c.Acquire("a"); !ok {
				t.Fatal("refused within max")
			}
		}
		for range 3 {
			c.Release("a")
		}
	}
	if c.Len() != 0 || c.Count("a") != 0 {
		t.Errorf("Len = %d, Count = %d after all releases: entries not removed at 0", c.Len(), c.Count("a"))
	}
	c.Release("a") // unknown key: no-op, never negative
	if ok, n := c.Acquire("a"); !ok || n != 1 {
		t.Errorf("Acquire after a stray Release = %v, %d, want true, 1", ok, n)
	}
}

func TestCounterUnlimitedAndUpdate(t *testing.T) {
	c := NewCounter[int](0)
	for i := range 100 {
		if ok, n := c.Acquire(1); !ok || n != i+1 {
			t.Fatalf("unlimited Counter: Acquire = %v, %d", ok, n)
		}
	}
	c.Update(50) // the 100 sessions stay; new ones wait until below 50
	if ok, n := c.Acquire(1); ok || n != 100 {
		t.Errorf("Acquire above a lowered max = %v, %d", ok, n)
	}
	for range 51 {
		c.Release(1)
	}
	if ok, n := c.Acquire(1); !ok || n != 50 {
		t.Errorf("Acquire below the lowered max = %v, %d", ok, n)
	}
}

func TestGauge(t *testing.T) {
	g := NewGauge(2)
	if ok, n := g.Acquire(); !ok || n != 1 {
		t.Fatalf("Acquire = %v, %d", ok, n)
	}
	g.Acquire()
	if ok, n := g.Acquire(); ok || n != 2 {
		t.Errorf("Acquire beyond max = %v, %d", ok, n)
	}
	g.Release()
	g.Release()
	g.Release() // never below zero
	if g.Current() != 0 {
		t.Errorf("Current = %d, want 0", g.Current())
	}
	g.Update(0)
	for range 10 {
		if ok, _ := g.Acquire(); !ok {
			t.Fatal("unlimited Gauge refused")
		}
	}
	var zero Gauge
	if ok, n := zero.Acquire(); !ok || n != 1 {
		t.Errorf("zero Gauge: Acquire = %v, %d", ok, n)
	}
}

// TestCounterConcurrent hammers Acquire/Release from many goroutines (run
// with -race) and checks that the number of holders of a key never exceeds
// max, and that everything is released at the end.
func TestCounterConcurrent(t *testing.T) {
	const max, keys, workers = 3, 4, 16
	c := NewCounter[int](max)
	g := NewGauge(workers / 2)
	var holders [keys]atomic.Int32
	var global atomic.Int32
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 3000 {
				k := (i + w) % keys
				if ok, _ := g.Acquire(); ok {
					if n := global.Add(1); n > workers/2 {
						t.Errorf("%d global holders, max %d", n, workers/2)
					}
					global.Add(-1)
					g.Release()
				}
				ok, n := c.Acquire(k)
				if !ok {
					continue
				}
				if n > max {
					t.Errorf("Acquire returned count %d > max", n)
				}
				if h := holders[k].Add(1); h > max {
					t.Errorf("key %d has %d holders, max %d", k, h, max)
				}
				holders[k].Add(-1)
				c.Release(k)
			}
		}()
	}
	wg.Wait()
	if c.Len() != 0 || g.Current() != 0 {
		t.Errorf("after all releases: Counter.Len = %d, Gauge.Current = %d", c.Len(), g.Current())
	}
}

func BenchmarkCounterAcquireRelease(b *testing.B) {
	b.Run("serial", func(b *testing.B) {
		c := NewCounter[string](10)
		b.ReportAllocs()
		for b.Loop() {
			c.Acquire("user")
			c.Release("user")
		}
	})
	b.Run("parallel", func(b *testing.B) {
		c := NewCounter[string](1 << 30)
		var n atomic.Int32
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			k := fmt.Sprint("user", n.Add(1))
			for pb.Next() {
				c.Acquire(k)
				c.Release(k)
			}
		})
	})
}

func BenchmarkGaugeAcquireRelease(b *testing.B) {
	g := NewGauge(1 << 30)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			g.Acquire()
			g.Release()
		}
	})
}
