package main

import (
	"fmt"
	"time"
)

// retrBlockBytes is about how much one target fetches before the other's turn.
const retrBlockBytes = 64 << 20

// retrComparison measures bulk RETR throughput: per target, one client on an
// ordinary TCP socket with a 32 KiB read buffer logs in as userBulk and
// fetches every message in order, one RETR at a time, reading each reply to
// its terminator. The targets take turns by blocks of about 64 MB of
// consecutive messages (see interleave). Throughput is the octets received for the RETRs
// (status lines and bodies) over the time spent in them. Each body's length is
// checked against what was stored, so a relay that drops or adds a byte fails
// the run. The servers' CPU time per GB is a cost that background load
// disturbs less than the rate.
func retrComparison(want []int64) comparison {
	return comparison{
		name: "RETR",
		metrics: []metricSpec{
			{name: "RETR throughput", unit: "MB/s", goal: ratioAtLeast(0.95)},
			{name: "RETR server CPU", unit: "s/GB"},
		},
		run: func(ts []target) ([][]float64, error) { return measureRETR(ts, want) },
	}
}

// usage adds up what one target used over its blocks.
type usage struct {
	n       int64 // octets, operations or sessions
	elapsed time.Duration
	cpu     time.Duration
}

// measureRETR returns, per target, the throughput in MB/s (10^6 octets per
// second) and the server CPU seconds per GB.
func measureRETR(ts []target, want []int64) ([][]float64, error) {
	clients := make([]*client, len(ts))
	for i, t := range ts {
		c, err := dialLogin(t, 32<<10, userBulk)
		if err != nil {
			return nil, err
		}
		defer c.conn.Close()
		c.deadline(time.Hour)
		clients[i] = c
	}
	// Block b is messages starts[b]+1 to starts[b+1].
	starts := []int{0}
	var size int64
	for i, w := range want {
		if size += w; size >= retrBlockBytes || i == len(want)-1 {
			starts = append(starts, i+1)
			size = 0
		}
	}
	use := make([]usage, len(ts))
	err := interleave(len(starts)-1, len(ts), func(b, ti int) error {
		c, u := clients[ti], &use[ti]
		cpu := startCPU(ts[ti])
		start := time.Now()
		for i := starts[b]; i < starts[b+1]; i++ {
			status, body, err := c.retr(i + 1)
			if err != nil {
				return fmt.Errorf("%s: %w", ts[ti].name, err)
			}
			if body != want[i] {
				return fmt.Errorf("%s: RETR %d: body of %d octets, want %d", ts[ti].name, i+1, body, want[i])
			}
			u.n += status + body
		}
		u.elapsed += time.Since(start)
		used, err := cpu.used()
		u.cpu += used
		return err
	})
	if err != nil {
		return nil, err
	}
	vals := make([][]float64, len(ts))
	for i, c := range clients {
		if err := c.quit(); err != nil {
			return nil, fmt.Errorf("%s: %w", ts[i].name, err)
		}
		gb := float64(use[i].n) / 1e9
		vals[i] = []float64{gb * 1e3 / use[i].elapsed.Seconds(), use[i].cpu.Seconds() / gb}
	}
	return vals, nil
}
