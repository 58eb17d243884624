package audit

import (
	"slices"
	"strconv"
	"strings"

	"github.com/rs/zerolog"
)

// MaxRecord is the longest record popproxy writes, in octets, newline and
// chain fields included: what a syslog relay or a line-oriented tool can be
// expected to carry whole. The lists of a session's messages, which a client
// can make as long as its mailbox, are cut to fit (see maxUIDLsOctets).
const MaxRecord = 64 << 10

// Bounds of the lists in session.checkpoint and session.close records, which
// leave room for everything else a record holds. Every DELE has a record of
// its own naming its message, so a cut list loses nothing.
const (
	maxMarkedOctets = 8 << 10
	maxUIDLsOctets  = 32 << 10
)

// markedRanges writes nums, sorted and without repeats, as ascending ranges:
// "1-5,8". It stops at a range that would pass maxMarkedOctets; omitted is
// how many numbers were left out.
func markedRanges(nums []int) (text string, omitted int) {
	sorted := slices.Clone(nums)
	slices.Sort(sorted)
	sorted = slices.Compact(sorted)
	var b []byte
	for i := 0; i < len(sorted); {
		j := i // sorted[i:j+1] is a run of consecutive numbers
		for j+1 < len(sorted) && sorted[j+1] == sorted[j]+1 {
			j++
		}
		n := len(b)
		if n > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, int64(sorted[i]), 10)
		if j > i {
			b = append(b, '-')
			b = strconv.AppendInt(b, int64(sorted[j]), 10)
		}
		if len(b) > maxMarkedOctets {
			return string(b[:n]), len(sorted) - i
		}
		i = j + 1
	}
	return string(b), 0
}

// countRanges is how many numbers ranges, as markedRanges writes them,
// stands for; -1 if it is malformed.
func countRanges(ranges string) int {
	if ranges == "" {
		return 0
	}
	count := 0
	for r := range strings.SplitSeq(ranges, ",") {
		first, last, isRange := strings.Cut(r, "-")
		if !isRange {
			last = first
		}
		lo, err1 := strconv.Atoi(first)
		hi, err2 := strconv.Atoi(last)
		if err1 != nil || err2 != nil || lo < 1 || hi < lo {
			return -1
		}
		count += hi - lo + 1
	}
	return count
}

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
