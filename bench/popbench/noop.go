package main

import (
	"fmt"
	"slices"
	"time"
)

const (
	noopWarmUp = 200   // NOOPs per session before timing starts
	noopBlock  = 10000 // NOOPs one target sends before the other's turn
)

// noopComparison measures the round trip of NOOP over one logged-in session of
// userLight per target: n NOOPs each, each sent once the previous reply has
// arrived, the targets taking turns by blocks of 10,000 (see interleave).
func noopComparison(n int) comparison {
	return comparison{
		name: "NOOP",
		metrics: []metricSpec{
			{name: "NOOP round trip p50", unit: "µs", goal: ratioAtMost(1.4)},
			{name: "NOOP round trip p99", unit: "µs"},
			{name: "NOOP server CPU", unit: "µs/NOOP"},
			{name: "NOOP proxy CPU", unit: "µs/NOOP"},
		},
		run: func(ts []target) ([][]float64, error) { return measureNOOP(ts, n) },
	}
}

// measureNOOP returns, per target, the p50 and p99 round trip and the
// servers' CPU time per NOOP, in microseconds.
func measureNOOP(ts []target, n int) ([][]float64, error) {
	clients := make([]*client, len(ts))
	for i, t := range ts {
		c, err := dialLogin(t, 4<<10, userLight)
		if err != nil {
			return nil, err
		}
		defer c.conn.Close()
		c.deadline(time.Hour)
		for range noopWarmUp {
			if _, err := c.cmd("NOOP"); err != nil {
				return nil, fmt.Errorf("%s: %w", t.name, err)
			}
		}
		clients[i] = c
	}
	rtt := make([][]time.Duration, len(ts))
	use := make([]usage, len(ts))
	blocks := (n + noopBlock - 1) / noopBlock
	err := interleave(blocks, len(ts), func(b, ti int) error {
		c := clients[ti]
		cpu := startCPU(ts[ti])
		for range min(noopBlock, n-b*noopBlock) {
			start := time.Now()
			if _, err := c.cmd("NOOP"); err != nil {
				return fmt.Errorf("%s: %w", ts[ti].name, err)
			}
			rtt[ti] = append(rtt[ti], time.Since(start))
		}
		used, err := cpu.used()
		use[ti].cpu += used
		if err != nil {
			return err
		}
		hop, err := cpu.hopUsed()
		use[ti].hop += hop
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
		r := rtt[i]
		slices.Sort(r)
		us := func(q float64) float64 { return float64(r[int(q*float64(len(r)-1))]) / 1e3 }
		n := float64(len(r))
		vals[i] = []float64{us(0.50), us(0.99), float64(use[i].cpu) / 1e3 / n, use[i].hop / 1e3 / n}
	}
	return vals, nil
}
