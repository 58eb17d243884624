package ratelimit

import (
	"fmt"
	"net/netip"
	"runtime"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/time/rate"
)

// The memory tests push 100,000 distinct keys through a table of maxKeys
// and check that the table never grows past maxKeys and that the heap, after
// GC, grows by no more than maxKeys entries' worth.

const (
	floodKeys   = 100000
	floodMax    = 10000
	heapSlackKB = 256 // runtime noise: test bookkeeping, GC metadata
)

// entryBound is a bound on the heap one table entry takes: the entry and
// what its value points to (extra), each rounded up to a 16-byte size class
// with a quarter for size-class waste, plus map slots. A Swiss-table map
// that sees deletions grows instead of rehashing in place
// (internal/runtime/maps.(*table).rehash), so under churn a map of n keys
// settles at several times its fresh size: measured on Go 1.26, up to about
// 10 slots per live key for a 1,000-key map, 8 for 10,000, 4 for 100,000.
// The bound allows mapSlots slots of key, pointer and control byte each.
func entryBound(entrySize, keySize, extra uintptr) uint64 {
	const mapSlots = 10
	round := func(n uintptr) uintptr { return (n + 15) &^ 15 }
	slot := keySize + unsafe.Sizeof(uintptr(0)) + 1
	return uint64(round(entrySize)*5/4 + round(extra)*5/4 + mapSlots*slot)
}

func heapAfterGC() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

func checkHeap(t *testing.T, before, after uint64, perEntry uint64) {
	t.Helper()
	bound := floodMax*perEntry + heapSlackKB<<10
	var grew uint64
	if after > before {
		grew = after - before
	}
	t.Logf("heap grew %d bytes (%d per key kept) for %d keys kept of %d; bound %d (%d per key)",
		grew, grew/floodMax, floodMax, floodKeys, bound, perEntry)
	if grew > bound {
		t.Errorf("heap grew %d bytes, bound %d", grew, bound)
	}
}

func TestBucketsMemoryBound(t *testing.T) {
	if testing.Short() {
		t.Skip("memory test")
	}
	c := newFakeClock()
	before := heapAfterGC()
	b := fakeBuckets(c, NewBuckets[netip.Prefix](1, 10, floodMax, time.Hour))
	for i := range uint32(floodKeys) {
		addr := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		b.Allow(IPKey(addr, 64))
		if i%64 == 0 {
			c.Advance(time.Millisecond) // all stay far from idle
		}
		if n := len(b.t.m); n > floodMax {
			t.Fatalf("after %d keys the table holds %d > maxKeys %d", i+1, n, floodMax)
		}
	}
	if b.Len() != floodMax {
		t.Errorf("Len = %d, want %d", b.Len(), floodMax)
	}
	after := heapAfterGC()
	perEntry := entryBound(unsafe.Sizeof(entry[netip.Prefix, *rate.Limiter]{}),
		unsafe.Sizeof(netip.Prefix{}), unsafe.Sizeof(rate.Limiter{}))
	checkHeap(t, before, after, perEntry)
	runtime.KeepAlive(b)
}

func TestFailuresMemoryBound(t *testing.T) {
	if testing.Short() {
		t.Skip("memory test")
	}
	c := newFakeClock()
	keys := make([]string, floodKeys) // made before measuring
	for i := range keys {
		keys[i] = fmt.Sprintf("user%06d@example.org", i)
	}
	before := heapAfterGC()
	f := fakeFailures(c, NewFailures[string](FailureConfig{
		MaxFailures: 3, Window: time.Hour, BaseDelay: time.Second, MaxDelay: time.Minute,
		Block: time.Hour, MaxKeys: floodMax,
	}))
	for i, k := range keys {
		f.Fail(k, newSecret())
		if i%10 == 0 { // some keys get blocked
			f.Fail(k, newSecret())
			f.Fail(k, newSecret())
		}
		if n := len(f.t.m); n > floodMax {
			t.Fatalf("after %d keys the table holds %d > MaxKeys %d", i+1, n, floodMax)
		}
	}
	if f.Len() != floodMax {
		t.Errorf("Len = %d, want %d", f.Len(), floodMax)
	}
	after := heapAfterGC()
	// The key strings are already on the heap (counted before), so an entry
	// adds itself, its map slot and its recent secrets: up to three, in an
	// array of four.
	perEntry := entryBound(unsafe.Sizeof(entry[string, failState]{}), unsafe.Sizeof(""), 4*unsafe.Sizeof(Fingerprint(0)))
	checkHeap(t, before, after, perEntry)
	runtime.KeepAlive(f)
	runtime.KeepAlive(keys)
}
