package main

import (
	"fmt"
	"sync"
	"time"
)

// Parameters of the idle-session measurement.
const (
	idleWarmUp  = 64              // sessions opened and closed before the baseline
	idleOpeners = 16              // clients logging in at the same time
	idleSettle  = 2 * time.Second // wait between the last login and reading RSS
)

// measureIdle opens n logged-in sessions of userLight through the proxy t
// (process pid), leaves them idle, and reports the growth of the proxy's
// resident set per session in KiB. The baseline is read after a warm-up, so
// the runtime's start-up costs are not charged to the sessions. Both reads
// include whatever garbage the Go runtime has not yet collected: it is what
// the process really holds.
func measureIdle(t target, pid, n int) (metric, error) {
	progress("idle: warming up with %d sessions", idleWarmUp)
	warm, err := openSessions(t, idleWarmUp)
	closeAll(warm)
	if err != nil {
		return metric{}, err
	}
	time.Sleep(time.Second)
	before, err := rssKiB(pid)
	if err != nil {
		return metric{}, err
	}
	progress("idle: opening %d sessions (proxy RSS %d KiB)", n, before)
	start := time.Now()
	clients, err := openSessions(t, n)
	defer closeAll(clients)
	if err != nil {
		return metric{}, err
	}
	progress("idle: %d sessions logged in after %v", n, time.Since(start).Round(time.Millisecond))
	time.Sleep(idleSettle)
	after, err := rssKiB(pid)
	if err != nil {
		return metric{}, err
	}
	// Every session must still be there: a proxy that dropped some would look cheap.
	for _, c := range clients {
		c.deadline(10 * time.Second)
		if _, err := c.cmd("NOOP"); err != nil {
			return metric{}, fmt.Errorf("idle session: %w", err)
		}
	}
	per := float64(after-before) / float64(n)
	progress("idle: proxy RSS %d → %d KiB: %.1f KiB per session", before, after, per)
	return metric{
		Name:   "RSS per idle session",
		Unit:   "KiB",
		Values: []targetValue{{Target: t.name, Median: per, Runs: []float64{per}}},
		goal:   atMost(16, "KiB"),
		Detail: fmt.Sprintf("proxy VmRSS %d KiB before, %d KiB with %d idle logged-in sessions", before, after, n),
	}, nil
}

// openSessions logs in n clients as userLight, idleOpeners at a time. On
// error it returns the clients opened so far with the first error.
func openSessions(t target, n int) ([]*client, error) {
	clients := make([]*client, n)
	errs := make([]error, idleOpeners)
	var wg sync.WaitGroup
	for w := 0; w < idleOpeners; w++ {
		wg.Add(1)
		go openEvery(t, clients, w, idleOpeners, &errs[w], &wg)
	}
	wg.Wait()
	var opened []*client
	for _, c := range clients {
		if c != nil {
			opened = append(opened, c)
		}
	}
	for _, err := range errs {
		if err != nil {
			return opened, err
		}
	}
	return opened, nil
}

// openEvery fills clients[first], clients[first+step], ... with logged-in
// sessions, stopping at the first error.
func openEvery(t target, clients []*client, first, step int, errp *error, wg *sync.WaitGroup) {
	defer wg.Done()
	for i := first; i < len(clients); i += step {
		c, err := dialLogin(t, 1<<10, userLight)
		if err != nil {
			*errp = err
			return
		}
		clients[i] = c
	}
}

func closeAll(clients []*client) {
	for _, c := range clients {
		c.conn.Close()
	}
}
