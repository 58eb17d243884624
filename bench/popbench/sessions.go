package main

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// sessionWindow is how long one target is loaded before the other's turn.
const sessionWindow = time.Second

// sessionsComparison measures how many short sessions a server completes per
// second: clients concurrent clients, each looping connect, read the
// greeting, USER/PASS as userLight (a small mailbox, so opening it is cheap),
// QUIT, close. The targets take turns by windows of one second, d in all for
// each. The rate is completed sessions over the time until the last client of
// each window stopped. Any failed session fails the measurement. The servers'
// CPU time per session is reported too.
func sessionsComparison(clients int, d time.Duration) comparison {
	return comparison{
		name: "sessions",
		metrics: []metricSpec{
			{name: "sessions per second", unit: "1/s", goal: ratioAtLeast(0.9)},
			{name: "server CPU per session", unit: "ms"},
			{name: "proxy CPU per session", unit: "ms"},
		},
		run: func(ts []target) ([][]float64, error) { return measureSessions(ts, clients, d) },
	}
}

// measureSessions returns, per target, sessions per second and the servers'
// CPU milliseconds per session.
func measureSessions(ts []target, clients int, d time.Duration) ([][]float64, error) {
	use := make([]usage, len(ts))
	windows := max(int(d/sessionWindow), 1)
	err := interleave(windows, len(ts), func(_, ti int) error {
		return sessionWindowRun(ts[ti], clients, &use[ti])
	})
	if err != nil {
		return nil, err
	}
	vals := make([][]float64, len(ts))
	for i, u := range use {
		n := float64(u.n)
		vals[i] = []float64{n / u.elapsed.Seconds(), float64(u.cpu) / 1e6 / n, u.hop / 1e6 / n}
	}
	return vals, nil
}

// sessionCounts is shared by the clients of one window.
type sessionCounts struct {
	ok, failed atomic.Int64
	mu         sync.Mutex
	firstErr   error
}

func (c *sessionCounts) fail(err error) {
	c.failed.Add(1)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.firstErr == nil {
		c.firstErr = err
	}
}

// sessionWindowRun loads t with clients looping sessions for one window and
// adds the outcome to u.
func sessionWindowRun(t target, clients int, u *usage) error {
	var counts sessionCounts
	var wg sync.WaitGroup
	cpu := startCPU(t)
	start := time.Now()
	stop := start.Add(sessionWindow)
	for i := range clients {
		wg.Add(1)
		ct := t
		if t.perClient != nil {
			ct = t.perClient(i)
		}
		go sessionLoop(ct, stop, &counts, &wg)
	}
	wg.Wait()
	u.elapsed += time.Since(start)
	// Let the servers finish closing the last sessions before reading CPU.
	time.Sleep(100 * time.Millisecond)
	used, err := cpu.used()
	if err != nil {
		return err
	}
	hop, err := cpu.hopUsed()
	if err != nil {
		return err
	}
	u.cpu += used
	u.hop += hop
	u.n += counts.ok.Load()
	if n := counts.failed.Load(); n > 0 {
		return fmt.Errorf("%s: %d of %d sessions failed; first: %v",
			t.name, n, n+counts.ok.Load(), counts.firstErr)
	}
	return nil
}

// sessionLoop is one client of a window.
func sessionLoop(t target, stop time.Time, counts *sessionCounts, wg *sync.WaitGroup) {
	defer wg.Done()
	for time.Now().Before(stop) {
		if err := oneSession(t); err != nil {
			counts.fail(err)
			continue
		}
		counts.ok.Add(1)
	}
}

func oneSession(t target) error {
	c, err := dialLogin(t, 1<<10, userLight)
	if err != nil {
		return err
	}
	return c.quit()
}
