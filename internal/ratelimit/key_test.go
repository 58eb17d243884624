package ratelimit

import (
	"net/netip"
	"testing"
)

func TestIPKey(t *testing.T) {
	tests := []struct {
		addr string
		bits int
		want string
	}{
		{"192.0.2.7", 64, "192.0.2.7/32"},
		{"192.0.2.7", 0, "192.0.2.7/32"},
		{"::ffff:192.0.2.7", 64, "192.0.2.7/32"}, // 4-in-6 counts as IPv4
		{"2001:db8:1:2:3:4:5:6", 64, "2001:db8:1:2::/64"},
		{"2001:db8:1:2:ffff::1", 64, "2001:db8:1:2::/64"},
		{"2001:db8:1:2:3:4:5:6", 48, "2001:db8:1::/48"},
		{"2001:db8:1:2:3:4:5:6", 128, "2001:db8:1:2:3:4:5:6/128"},
		{"2001:db8:1:2:3:4:5:6", 0, "2001:db8:1:2::/64"},   // default
		{"2001:db8:1:2:3:4:5:6", 129, "2001:db8:1:2::/64"}, // default
		{"2001:db8:1:2:3:4:5:6", -1, "2001:db8:1:2::/64"},  // default
		{"fe80::1%eth0", 64, "fe80::/64"},                  // zone ignored
	}
	for _, tt := range tests {
		got := IPKey(netip.MustParseAddr(tt.addr), tt.bits)
		if got.String() != tt.want {
			t.Errorf("IPKey(%s, %d) = %s, want %s", tt.addr, tt.bits, got, tt.want)
		}
	}
	if got := IPKey(netip.Addr{}, 64); got != (netip.Prefix{}) {
		t.Errorf("IPKey(zero) = %v, want zero Prefix", got)
	}
}

func TestIPKeyGrouping(t *testing.T) {
	key := func(s string) netip.Prefix { return IPKey(netip.MustParseAddr(s), 64) }
	if key("2001:db8:0:1::1") != key("2001:db8:0:1:8000::2") {
		t.Error("two addresses in one /64 have different keys")
	}
	if key("2001:db8:0:1::1") == key("2001:db8:0:2::1") {
		t.Error("addresses in different /64s share a key")
	}
	if key("::ffff:198.51.100.1") != key("198.51.100.1") {
		t.Error("4-in-6 address has a different key from its IPv4 address")
	}
	if key("198.51.100.1") == key("198.51.100.2") {
		t.Error("two IPv4 addresses share a key")
	}
}

func TestIPKeyAllocs(t *testing.T) {
	a := netip.MustParseAddr("2001:db8::1")
	if n := testing.AllocsPerRun(100, func() { _ = IPKey(a, 64) }); n != 0 {
		t.Errorf("IPKey allocates %v times", n)
	}
}

func TestNetworks(t *testing.T) {
	n, err := ParseNetworks([]string{
		"10.0.0.0/8",
		" 192.0.2.7 ",            // bare address: a /32
		"198.51.100.77/24",       // host bits cleared
		"::ffff:203.0.113.0/120", // 4-in-6 prefix becomes 203.0.113.0/24
		"2001:db8:aa::/48",
		"::1",
	})
	if err != nil {
		t.Fatal(err)
	}
	for addr, want := range map[string]bool{
		"10.1.2.3":             true,
		"11.0.0.1":             false,
		"192.0.2.7":            true,
		"192.0.2.8":            false,
		"198.51.100.1":         true,
		"203.0.113.9":          true,
		"::ffff:10.9.9.9":      true, // looked up as IPv4
		"::ffff:203.0.113.200": true,
		"2001:db8:aa:ffff::1":  true,
		"2001:db8:ab::1":       false,
		"::1":                  true,
		"::2":                  false,
		"fe80::1%eth0":         false,
	} {
		if got := n.Contains(netip.MustParseAddr(addr)); got != want {
			t.Errorf("Contains(%s) = %v, want %v", addr, got, want)
		}
	}
	if got := len(n.prefixes); got != 6 {
		t.Errorf("%d networks, want 6", got)
	}

	var zero Networks
	if zero.Contains(netip.MustParseAddr("127.0.0.1")) {
		t.Error("zero Networks contains 127.0.0.1")
	}
	if n, err := ParseNetworks(nil); err != nil || n.Contains(netip.MustParseAddr("127.0.0.1")) {
		t.Errorf("ParseNetworks(nil) = %v, %v", n, err)
	}
}

func TestParseNetworksErrors(t *testing.T) {
	for _, s := range []string{"", "10.0.0.0/33", "nonsense", "10.0.0.0/", "fe80::1%eth0", "fe80::/64%eth0", "10.0.0.1/8/8"} {
		if _, err := ParseNetworks([]string{"127.0.0.1", s}); err == nil {
			t.Errorf("ParseNetworks(%q) succeeded", s)
		}
	}
}

func BenchmarkIPKey(b *testing.B) {
	a := netip.MustParseAddr("2001:db8::1")
	b.ReportAllocs()
	for b.Loop() {
		_ = IPKey(a, 64)
	}
}
