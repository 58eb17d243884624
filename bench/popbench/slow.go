package main

import (
	"fmt"
	"net"
	"time"
)

// Parameters of the slow-reader measurement.
const (
	slowReadSize = 64 << 10               // the slow client reads at most this much at once
	rssInterval  = 100 * time.Millisecond // proxy RSS sampling period
)

// measureSlowReader has a client fetch userSlow's one large message through
// the proxy t (process pid) at rate bytes per second, and reports the largest
// growth of the proxy's resident set, sampled every 100 ms, over its value
// before the client connected. A proxy that relays in bounded memory holds
// the backlog in the kernel's socket buffers (not in RSS) while Dovecot waits.
func measureSlowReader(t target, pid int, rate float64, want int64) (metric, error) {
	// Warm up the relay path with a small message, so that the first use of
	// pooled buffers is not charged to the slow reader.
	w, err := dialLogin(t, 32<<10, userLight)
	if err != nil {
		return metric{}, err
	}
	if _, _, err := w.retr(1); err != nil {
		return metric{}, err
	}
	if err := w.quit(); err != nil {
		return metric{}, err
	}
	time.Sleep(500 * time.Millisecond)
	base, err := rssKiB(pid)
	if err != nil {
		return metric{}, err
	}

	stop := make(chan struct{})
	peak := make(chan int64, 1)
	go samplePeakRSS(pid, stop, peak)

	slow := target{name: t.name, dial: func() (net.Conn, error) {
		c, err := t.dial()
		if err != nil {
			return nil, err
		}
		return &throttledConn{Conn: c, rate: rate}, nil
	}}
	c, err := dialLogin(slow, slowReadSize, userSlow)
	if err != nil {
		close(stop)
		return metric{}, err
	}
	defer c.conn.Close()
	c.deadline(time.Duration(float64(want)/rate*float64(time.Second)) + 5*time.Minute)
	start := time.Now()
	_, body, err := c.retr(1)
	elapsed := time.Since(start)
	close(stop)
	peakRSS := <-peak
	if err != nil {
		return metric{}, fmt.Errorf("slow reader: %w", err)
	}
	if body != want {
		return metric{}, fmt.Errorf("slow reader: body of %d octets, want %d", body, want)
	}
	if err := c.quit(); err != nil {
		return metric{}, fmt.Errorf("slow reader: %w", err)
	}
	growth := float64(peakRSS - base)
	progress("slow reader: %.0f MB in %v; proxy RSS %d KiB, peak %d KiB", float64(body)/1e6, elapsed.Round(time.Millisecond), base, peakRSS)
	return metric{
		Name:   "slow reader RSS growth",
		Unit:   "KiB",
		Values: []targetValue{{Target: t.name, Median: growth, Runs: []float64{growth}}},
		goal:   atMost(1024, "KiB"),
		Detail: fmt.Sprintf("%.0f MB message read at %.1f MB/s in %v; proxy VmRSS %d KiB before, peak %d KiB",
			float64(body)/1e6, float64(body)/1e6/elapsed.Seconds(), elapsed.Round(time.Millisecond), base, peakRSS),
	}, nil
}

// samplePeakRSS reads pid's RSS every rssInterval until stop is closed, then
// sends the largest value seen.
func samplePeakRSS(pid int, stop <-chan struct{}, peak chan<- int64) {
	var highest int64
	tick := time.NewTicker(rssInterval)
	defer tick.Stop()
	for {
		if v, err := rssKiB(pid); err == nil && v > highest {
			highest = v
		}
		select {
		case <-stop:
			if v, err := rssKiB(pid); err == nil && v > highest {
				highest = v
			}
			peak <- highest
			return
		case <-tick.C:
		}
	}
}

// throttledConn reads no faster than rate bytes per second on average, at
// most slowReadSize bytes at a time.
type throttledConn struct {
	net.Conn
	rate  float64
	start time.Time
	n     int64
}

func (c *throttledConn) Read(p []byte) (int, error) {
	if c.start.IsZero() {
		c.start = time.Now()
	}
	if len(p) > slowReadSize {
		p = p[:slowReadSize]
	}
	due := c.start.Add(time.Duration(float64(c.n) / c.rate * float64(time.Second)))
	time.Sleep(time.Until(due))
	n, err := c.Conn.Read(p)
	c.n += int64(n)
	return n, err
}
