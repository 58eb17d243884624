package ratelimit

import (
	"fmt"
	"net/netip"
	"strings"
)

// DefaultV6Prefix is the prefix length IPKey groups IPv6 addresses by when
// given a length outside 1..128: one /64 is one subscriber's network, and an
// attacker holding one has 2^64 addresses to rotate through.
const DefaultV6Prefix = 64

// IPKey returns the key that per-address limits use for addr: the address
// itself (a /32) for IPv4, and for IPv6 the network of the first v6Prefix
// bits, so that all addresses of one /64 (by default) share their limits.
// IPv4-mapped IPv6 addresses (::ffff:192.0.2.1) count as the IPv4 address,
// zones are ignored, and a v6Prefix outside 1..128 means DefaultV6Prefix.
// The zero Addr gives the zero Prefix, so all invalid addresses share one key.
// IPKey does not allocate.
func IPKey(addr netip.Addr, v6Prefix int) netip.Prefix {
	addr = addr.WithZone("").Unmap()
	switch {
	case addr.Is4():
		return netip.PrefixFrom(addr, 32)
	case !addr.IsValid():
		return netip.Prefix{}
	}
	if v6Prefix < 1 || v6Prefix > 128 {
		v6Prefix = DefaultV6Prefix
	}
	p, _ := addr.Prefix(v6Prefix) // cannot fail: valid, no zone, bits in range
	return p
}

// Networks is a list of networks, such as the trusted networks exempt from
// per-address limits. The zero Networks contains nothing. A Networks is not
// modified after ParseNetworks, so it is safe for concurrent use.
type Networks struct {
	prefixes []netip.Prefix
}

// ParseNetworks parses CIDR prefixes ("192.0.2.0/24", "2001:db8::/32") and
// bare addresses (a /32 or /128). Host bits are cleared ("192.0.2.7/24" is
// 192.0.2.0/24) and IPv4-mapped IPv6 prefixes become IPv4 ones, matching
// IPKey. Zones are refused, as is an empty entry.
func ParseNetworks(list []string) (Networks, error) {
	var n Networks
	for _, s := range list {
		p, err := parseNetwork(strings.TrimSpace(s))
		if err != nil {
			return Networks{}, fmt.Errorf("ratelimit: network %q: %w", s, err)
		}
		n.prefixes = append(n.prefixes, p)
	}
	return n, nil
}

func parseNetwork(s string) (netip.Prefix, error) {
	var p netip.Prefix
	if strings.Contains(s, "/") {
		var err error
		if p, err = netip.ParsePrefix(s); err != nil {
			return p, err
		}
	} else {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return p, err
		}
		if a.Zone() != "" {
			return p, fmt.Errorf("zones are not allowed")
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p.Masked(), nil
}

// Contains reports whether addr is in one of the networks. IPv4-mapped
// addresses are looked up as IPv4 and zones are ignored.
func (n Networks) Contains(addr netip.Addr) bool {
	addr = addr.WithZone("").Unmap()
	for _, p := range n.prefixes {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}
