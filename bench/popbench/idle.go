package main

import (
	"fmt"
	"os"
	"sync"
	"time"
)

// Parameters of the idle-session measurements.
const (
	idleWarmUp  = 64              // sessions opened and closed before the baseline
	idleOpeners = 16              // clients logging in at the same time
	idleSettle  = 2 * time.Second // wait between the last login and reading RSS
)

// idleHold is what holding n idle logged-in sessions cost a proxy.
type idleHold struct {
	n             int
	before, after int64         // VmRSS in KiB after the warm-up, and with the sessions open
	fdsBefore     int           // open descriptors after the warm-up
	fds           int           // and with the sessions open
	opening       time.Duration // to open the sessions and log them in
}

// perSession is the growth of the resident set per session, in KiB.
func (h idleHold) perSession() float64 { return float64(h.after-h.before) / float64(h.n) }

// measureIdle reports the growth of the proxy's resident set per idle
// logged-in session of userLight through t (process pid); see holdIdle.
func measureIdle(t target, pid, n int) (metric, error) {
	h, err := holdIdle(t, pid, n, func(int) string { return userLight })
	if err != nil {
		return metric{}, err
	}
	per := h.perSession()
	return metric{
		Name:   "RSS per idle session",
		Unit:   "KiB",
		Values: []targetValue{{Target: t.name, Median: per, Runs: []float64{per}}},
		goal:   atMost(16, "KiB"),
		Detail: fmt.Sprintf("proxy VmRSS %d KiB before, %d KiB with %d idle logged-in sessions", h.before, h.after, n),
	}, nil
}

// holdIdle opens n logged-in sessions through the proxy t (process pid),
// session i as user(i), leaves them idle and reads what the proxy holds.
// The warm-up's sessions log in as user(n) to user(n+idleWarmUp-1). The
// baseline is read after the warm-up, so the runtime's start-up costs are
// not charged to the sessions. Both reads include whatever garbage the Go
// runtime has not yet collected: it is what the process really holds.
func holdIdle(t target, pid, n int, user func(i int) string) (idleHold, error) {
	h := idleHold{n: n}
	progress("idle: warming up with %d sessions", idleWarmUp)
	warm, err := openSessions(t, idleWarmUp, func(i int) string { return user(n + i) })
	closeAll(warm)
	if err != nil {
		return h, err
	}
	time.Sleep(time.Second)
	if h.before, err = rssKiB(pid); err != nil {
		return h, err
	}
	if h.fdsBefore, err = openFDs(pid); err != nil {
		return h, err
	}
	progress("idle: opening %d sessions (proxy RSS %d KiB)", n, h.before)
	start := time.Now()
	clients, err := openSessions(t, n, user)
	defer closeAll(clients)
	if err != nil {
		return h, fmt.Errorf("%d of %d sessions opened: %w", len(clients), n, err)
	}
	h.opening = time.Since(start)
	progress("idle: %d sessions logged in after %v", n, h.opening.Round(time.Millisecond))
	time.Sleep(idleSettle)
	if h.after, err = rssKiB(pid); err != nil {
		return h, err
	}
	if h.fds, err = openFDs(pid); err != nil {
		return h, err
	}
	// Every session must still be there: a proxy that dropped some would look cheap.
	deadline := time.Now().Add(10*time.Second + time.Duration(n)*time.Millisecond)
	held := 0
	var first error
	for _, c := range clients {
		c.conn.SetDeadline(deadline)
		if _, err := c.cmd("NOOP"); err != nil {
			if first == nil {
				first = err
			}
			continue
		}
		held++
	}
	if held < n {
		return h, fmt.Errorf("%d of %d idle sessions answered NOOP; first failure: %w", held, n, first)
	}
	progress("idle: proxy RSS %d → %d KiB: %.1f KiB per session; %d → %d descriptors",
		h.before, h.after, h.perSession(), h.fdsBefore, h.fds)
	return h, nil
}

// openFDs counts the open descriptors of process pid.
func openFDs(pid int) (int, error) {
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return len(fds), err
}

// openSessions logs in n clients, client i as user(i), idleOpeners at a
// time. On error it returns the clients opened so far with the first error.
func openSessions(t target, n int, user func(i int) string) ([]*client, error) {
	clients := make([]*client, n)
	errs := make([]error, idleOpeners)
	var wg sync.WaitGroup
	for w := 0; w < idleOpeners; w++ {
		wg.Add(1)
		go openEvery(t, user, clients, w, idleOpeners, &errs[w], &wg)
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
func openEvery(t target, user func(int) string, clients []*client, first, step int, errp *error, wg *sync.WaitGroup) {
	defer wg.Done()
	for i := first; i < len(clients); i += step {
		c, err := dialLogin(t, 1<<10, user(i))
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
