package audit

import (
	"slices"
	"strconv"

	"github.com/rs/zerolog"
)

// MaxRecord is the longest record popproxy writes, in octets, newline and
// chain fields included: what a syslog relay or a line-oriented tool can be
// expected to carry whole. The lists of a session's messages, which a client
// can make as long as its mailbox, are cut to fit (see maxUIDLsOctets).
const MaxRecord = 64 << 10

// maxUIDLsOctets bounds the "uidls" object of a session.close record, which
// leaves room for everything else a record holds. Every DELE has a record of
// its own naming its message, so a cut list loses nothing.
const maxUIDLsOctets = 32 << 10

// uidlDict is ids as a JSON object from message number to unique id, in
// ascending order, cut to maxUIDLsOctets; omitted is how many were left out.
func uidlDict(ids map[int]string) (d *zerolog.Event, omitted int) {
	nums := make([]int, 0, len(ids))
	for n := range ids {
		nums = append(nums, n)
	}
	slices.Sort(nums)
	d = zerolog.Dict()
	size := 2 // {}
	for i, n := range nums {
		key := strconv.Itoa(n)
		// At most: "key":"uid", with every octet of uid escaped.
		size += len(key) + 2*len(ids[n]) + 6
		if size > maxUIDLsOctets {
			return d, len(nums) - i
		}
		d.Str(key, ids[n])
	}
	return d, 0
}
