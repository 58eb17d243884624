package ratelimit_test

import (
	"fmt"
	"net/netip"
	"time"

	"golang.org/x/time/rate"

	"github.com/popproxy/popproxy/internal/ratelimit"
)

func ExampleIPKey() {
	for _, s := range []string{"192.0.2.7", "::ffff:192.0.2.7", "2001:db8:1:2::10", "2001:db8:1:2:ffff::1"} {
		fmt.Println(ratelimit.IPKey(netip.MustParseAddr(s), 64))
	}
	// Output:
	// 192.0.2.7/32
	// 192.0.2.7/32
	// 2001:db8:1:2::/64
	// 2001:db8:1:2::/64
}

func ExampleBuckets() {
	// Three connections, then one every 10 seconds, per address.
	conns := ratelimit.NewBuckets[netip.Prefix](rate.Every(10*time.Second), 3, 100000, time.Minute)
	ip := ratelimit.IPKey(netip.MustParseAddr("198.51.100.1"), 64)
	for range 4 {
		ok, wait := conns.Take(ip)
		fmt.Println(ok, wait.Round(time.Second))
	}
	// Output:
	// true 0s
	// true 0s
	// true 0s
	// false 10s
}

func ExampleFailures() {
	perUser := ratelimit.NewFailures[string](ratelimit.FailureConfig{
		MaxFailures: 3, Window: 10 * time.Minute,
		BaseDelay: 2 * time.Second, MaxDelay: 15 * time.Second,
		Block: 15 * time.Minute, MaxKeys: 100000,
	})
	fingerprints := ratelimit.NewFingerprinter() // one per process
	// The same wrong password twice counts once.
	for _, password := range []string{"hunter2", "hunter2", "letmein", "123456"} {
		blocked := perUser.Fail("alice", fingerprints.Of("alice", password))
		fmt.Println(blocked, perUser.Delay("alice"))
	}
	perUser.Reset("alice") // alice logged in: her per-user record goes
	fmt.Println(perUser.Blocked("alice"))
	// Output:
	// false 2s
	// false 2s
	// false 4s
	// true 8s
	// false 0s
}

func ExampleCounter() {
	perIP := ratelimit.NewCounter[netip.Prefix](2)
	ip := ratelimit.IPKey(netip.MustParseAddr("198.51.100.1"), 64)
	fmt.Println(perIP.Acquire(ip))
	fmt.Println(perIP.Acquire(ip))
	fmt.Println(perIP.Acquire(ip))
	perIP.Release(ip)
	perIP.Release(ip)
	fmt.Println(perIP.Len())
	// Output:
	// true 1
	// true 2
	// false 2
	// 0
}
