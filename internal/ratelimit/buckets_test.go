package ratelimit

import (
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/time/rate"
)

func TestBucketsTrip(t *testing.T) {
	c := newFakeClock()
	b := fakeBuckets(c, NewBuckets[string](1, 3, 100, time.Minute)) // 1/s, burst 3
	for i := range 3 {
		if !b.Allow("a") {
			t.Fatalf("event %d refused within the burst", i+1)
		}
	}
	ok, wait := b.Take("a")
	if ok {
		t.Fatal("event beyond the burst allowed")
	}
	if wait <= 0 || wait > time.Second {
		t.Errorf("wait = %v, want (0, 1s]", wait)
	}
	// A refused event costs nothing: after the wait one token is back.
	c.Advance(wait)
	if !b.Allow("a") {
		t.Error("event refused after the announced wait")
	}
	if b.Allow("a") {
		t.Error("second event allowed with no tokens left")
	}
	// Other keys are independent.
	if !b.Allow("b") {
		t.Error("key b refused because of key a")
	}
}

func TestBucketsUnder(t *testing.T) {
	c := newFakeClock()
	b := fakeBuckets(c, NewBuckets[string](10, 2, 100, time.Minute))
	for i := range 1000 { // 9/s against a limit of 10/s
		if !b.Allow("a") {
			t.Fatalf("event %d refused below the rate", i)
		}
		c.Advance(time.Second / 9)
	}
}

func TestBucketsInfAndZero(t *testing.T) {
	inf := NewBuckets[string](rate.Inf, 0, 10, 0)
	zero := NewBuckets[string](0, 10, 10, 0)
	for range 100 {
		if !inf.Allow("a") {
			t.Fatal("rate.Inf refused an event")
		}
		if ok, wait := zero.Take("a"); ok || wait != rate.InfDuration {
			t.Fatalf("limit 0: Take = %v, %v", ok, wait)
		}
	}
	if inf.Len() != 0 || zero.Len() != 0 {
		t.Errorf("Len = %d, %d, want no state", inf.Len(), zero.Len())
	}
}

func TestBucketsIdleEviction(t *testing.T) {
	c := newFakeClock()
	// Refill takes 5 s at 1/s and burst 5, so idle 1 s is raised to 5 s.
	b := fakeBuckets(c, NewBuckets[int](1, 5, 100, time.Second))
	for k := range 10 {
		for range 5 {
			b.Allow(k)
		}
	}
	if b.Allow(0) {
		t.Fatal("empty bucket allowed an event")
	}
	c.Advance(2 * time.Second) // past idle as given, not as raised
	if b.Len() != 10 {
		t.Errorf("Len = %d after 2 s, want 10: idle was not raised to the refill time", b.Len())
	}
	c.Advance(4 * time.Second)
	for range 3 { // each call sweeps a few expired entries
		b.Allow(99)
	}
	if n := b.Len(); n != 1 {
		t.Errorf("Len = %d after idle, want 1 (only key 99)", n)
	}
	for range 5 {
		if !b.Allow(0) {
			t.Fatal("forgotten key has no full burst")
		}
	}
}

func TestBucketsLRUEviction(t *testing.T) {
	c := newFakeClock()
	b := fakeBuckets(c, NewBuckets[string](rate.Every(time.Hour), 1, 3, time.Hour))
	for _, k := range []string{"a", "b", "c"} {
		b.Allow(k)
	}
	b.Allow("a") // refused, but a is now the most recently used
	b.Allow("d") // evicts b, the least recently used
	if b.Len() != 3 {
		t.Fatalf("Len = %d, want 3", b.Len())
	}
	if b.Allow("a") || b.Allow("c") || b.Allow("d") {
		t.Error("a tracked key was evicted instead of the least recently used")
	}
	if !b.Allow("b") {
		t.Error("b was not evicted")
	}
}

func TestBucketsUpdate(t *testing.T) {
	c := newFakeClock()
	b := fakeBuckets(c, NewBuckets[string](100, 100, 10, time.Minute))
	for _, k := range []string{"a", "b", "c", "d"} {
		b.Allow(k)
	}
	b.Update(1, 2, 2, time.Minute) // existing buckets adopt burst 2; table shrinks to 2
	if b.Len() != 2 {
		t.Errorf("Len = %d after lowering maxKeys, want 2", b.Len())
	}
	n := 0
	for b.Allow("d") {
		n++
	}
	if n != 2 {
		t.Errorf("existing key got %d events after Update, want 2 (the new burst)", n)
	}
	c.Advance(time.Second)
	if !b.Allow("d") || b.Allow("d") {
		t.Error("existing key does not refill at the new rate of 1/s")
	}
	b.Update(rate.Inf, 1, 2, 0)
	if b.Len() != 0 || !b.Allow("d") {
		t.Error("Update to rate.Inf kept state or refused")
	}
}

// TestBucketsConcurrent hammers one Buckets from many goroutines (run with
// -race) and checks that no key got more than its burst.
func TestBucketsConcurrent(t *testing.T) {
	const keys, burst, workers = 50, 20, 16
	b := NewBuckets[netip.Prefix](rate.Every(time.Hour), burst, keys/2, time.Hour)
	var allowed [keys]atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 2000 {
				k := (i*7 + w) % keys
				if b.Allow(IPKey(netip.AddrFrom4([4]byte{10, 0, 0, byte(k)}), 64)) {
					allowed[k].Add(1)
				}
				if b.Len() > keys/2 {
					t.Error("table above maxKeys")
					return
				}
			}
		}()
	}
	wg.Wait()
	var total int64
	for k := range allowed {
		total += allowed[k].Load()
	}
	// Eviction gives a key a fresh burst, so the total can exceed
	// keys*burst, but every call is counted exactly once.
	if total == 0 || total > workers*2000 {
		t.Errorf("total allowed = %d", total)
	}
}

func TestBucketsConcurrentOneKey(t *testing.T) {
	const burst = 100
	b := NewBuckets[string](rate.Every(time.Hour), burst, 10, time.Hour)
	var allowed atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 1000 {
				if b.Allow("k") {
					allowed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if n := allowed.Load(); n != burst {
		t.Errorf("allowed %d events for one key, want exactly the burst %d", n, burst)
	}
}

func TestBucketsAllocs(t *testing.T) {
	b := NewBuckets[netip.Prefix](1e9, 1e9, 10, time.Minute)
	k := IPKey(netip.MustParseAddr("192.0.2.1"), 64)
	b.Allow(k)
	if n := testing.AllocsPerRun(1000, func() { b.Allow(k) }); n != 0 {
		t.Errorf("Allow on a known key allocates %v times", n)
	}
}

func BenchmarkBucketsAllow(b *testing.B) {
	for _, keys := range []int{1, 1000} {
		b.Run(fmt.Sprintf("keys=%d", keys), func(b *testing.B) {
			bk := NewBuckets[netip.Prefix](1e9, 1e9, 100000, time.Minute)
			ks := make([]netip.Prefix, keys)
			for i := range ks {
				ks[i] = IPKey(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), 64)
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				bk.Allow(ks[i%keys])
				i++
			}
		})
	}
	b.Run("new-keys-full-table", func(b *testing.B) {
		bk := NewBuckets[netip.Prefix](1, 5, 1000, time.Minute)
		b.ReportAllocs()
		var i uint32
		for b.Loop() {
			i++
			bk.Allow(IPKey(netip.AddrFrom4([4]byte{byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i)}), 64))
		}
	})
	b.Run("parallel", func(b *testing.B) {
		bk := NewBuckets[netip.Prefix](1e9, 1e9, 100000, time.Minute)
		var n atomic.Uint32
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			k := IPKey(netip.AddrFrom4([4]byte{10, 0, 0, byte(n.Add(1))}), 64)
			for pb.Next() {
				bk.Allow(k)
			}
		})
	})
}
