package main

import (
	"fmt"
	"time"
)

// retrBlockBytes is about how much one target fetches before the other's turn.
const retrBlockBytes = 64 << 20

// readMode is how a RETR client treats its socket.
type readMode int

const (
	// ordinaryClient leaves acknowledgements to the kernel, which delays them
	// when it takes the exchange for an interactive one.
	ordinaryClient readMode = iota
	// quickAckClient acknowledges every segment at once (see quickAck), as a
	// client tuned for bulk downloads can.
	quickAckClient
)

// suffix ends the names of the mode's metrics.
func (m readMode) suffix() string {
	if m == quickAckClient {
		return ", quick-ACK client"
	}
	return ""
}

// retrComparison measures bulk RETR throughput: per target and per mode in
// modes, one client with a 32 KiB read buffer logs in as userBulk and fetches
// every message in order, one RETR at a time, reading each reply to its
// terminator. The targets, and the modes, take turns by blocks of about 64 MB
// of consecutive messages (see interleave). Throughput is the octets received
// for the RETRs (status lines and bodies) over the time spent in them. Each
// body's length is checked against what was stored, so a relay that drops or
// adds a byte fails the run. The servers' CPU time per GB is a cost that
// background load disturbs less than the rate.
//
// The ordinary client is held to the goal. nginx stalls on it for a delayed
// ACK at the end of every message (Nagle, ~40 ms: minutes per round for the
// full mailbox), so a target marked stallsOnDelayedACK fetches only the first
// block with it, and the whole mailbox with the quick-ACK client.
func retrComparison(want []int64, modes ...readMode) comparison {
	var metrics []metricSpec
	for _, m := range modes {
		var g goal
		if m == ordinaryClient {
			g = ratioAtLeast(0.95)
		}
		metrics = append(metrics,
			metricSpec{name: "RETR throughput" + m.suffix(), unit: "MB/s", goal: g},
			metricSpec{name: "RETR server CPU" + m.suffix(), unit: "s/GB"})
	}
	return comparison{
		name:    "RETR",
		metrics: metrics,
		run:     func(ts []target) ([][]float64, error) { return measureRETR(ts, want, modes) },
	}
}

// usage adds up what one target used over its blocks.
type usage struct {
	n       int64 // octets, operations or sessions
	elapsed time.Duration
	cpu     time.Duration
	hop     float64 // nanoseconds of the proxy's own CPU time; NaN for a direct target
}

// retrBlocks splits the mailbox into blocks of about retrBlockBytes: block b
// is messages starts[b]+1 to starts[b+1].
func retrBlocks(want []int64) (starts []int) {
	starts = []int{0}
	var size int64
	for i, w := range want {
		if size += w; size >= retrBlockBytes || i == len(want)-1 {
			starts = append(starts, i+1)
			size = 0
		}
	}
	return starts
}

// retrClient is one target's client in one mode.
type retrClient struct {
	t      target
	c      *client
	blocks int // how many blocks it fetches
	use    usage
}

// measureRETR returns, per target, for each mode the throughput in MB/s
// (10^6 octets per second) and the server CPU seconds per GB.
func measureRETR(ts []target, want []int64, modes []readMode) ([][]float64, error) {
	starts := retrBlocks(want)
	blocks := len(starts) - 1
	// Client m*len(ts)+i is target i's in mode m: the modes take turns like
	// the targets, so that both meet the same background load.
	clients := make([]*retrClient, 0, len(modes)*len(ts))
	for _, m := range modes {
		for _, t := range ts {
			rc := &retrClient{t: t, blocks: blocks}
			dt := t
			if m == quickAckClient {
				dt = quickAck(t)
			} else if t.stallsOnDelayedACK {
				rc.blocks = 1
			}
			c, err := dialLogin(dt, 32<<10, userBulk)
			if err != nil {
				return nil, err
			}
			defer c.conn.Close()
			c.deadline(time.Hour)
			rc.c = c
			clients = append(clients, rc)
		}
	}
	err := interleave(blocks, len(clients), func(b, ci int) error {
		rc := clients[ci]
		if b >= rc.blocks {
			return nil
		}
		cpu := startCPU(rc.t)
		start := time.Now()
		for i := starts[b]; i < starts[b+1]; i++ {
			status, body, err := rc.c.retr(i + 1)
			if err != nil {
				return fmt.Errorf("%s: %w", rc.t.name, err)
			}
			if body != want[i] {
				return fmt.Errorf("%s: RETR %d: body of %d octets, want %d", rc.t.name, i+1, body, want[i])
			}
			rc.use.n += status + body
		}
		rc.use.elapsed += time.Since(start)
		used, err := cpu.used()
		rc.use.cpu += used
		return err
	})
	if err != nil {
		return nil, err
	}
	vals := make([][]float64, len(ts))
	for ci, rc := range clients {
		if err := rc.c.quit(); err != nil {
			return nil, fmt.Errorf("%s: %w", rc.t.name, err)
		}
		gb := float64(rc.use.n) / 1e9
		i := ci % len(ts)
		vals[i] = append(vals[i], gb*1e3/rc.use.elapsed.Seconds(), rc.use.cpu.Seconds()/gb)
	}
	return vals, nil
}
