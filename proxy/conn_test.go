package proxy

import (
	"net"
	"testing"
	"time"
)

// deadlineCounter counts the deadlines set on it.
type deadlineCounter struct {
	net.Conn
	reads, writes int
	last          time.Time
}

func (d *deadlineCounter) SetReadDeadline(t time.Time) error  { d.reads++; d.last = t; return nil }
func (d *deadlineCounter) SetWriteDeadline(t time.Time) error { d.writes++; d.last = t; return nil }
func (d *deadlineCounter) SetDeadline(t time.Time) error      { d.last = t; return nil }

// TestDeadlineSlack checks that a deadline is moved once per slack, not on
// every call, and never set earlier than the timeout asks.
func TestDeadlineSlack(t *testing.T) {
	dc := &deadlineCounter{}
	c := &timeoutConn{Conn: dc}
	const d = 16 * time.Second
	start := time.Now()
	for i := range 100 {
		now := start.Add(time.Duration(i) * 10 * time.Millisecond) // 1 s in all
		c.extend(true, now.Add(d), d/slackDivisor)
		if dc.last.Before(now.Add(d)) || dc.last.After(now.Add(d+d/slackDivisor)) {
			t.Fatalf("at +%v the deadline is %v after the start, want between %v and %v",
				now.Sub(start), dc.last.Sub(start), now.Add(d).Sub(start), now.Add(d+d/slackDivisor).Sub(start))
		}
	}
	if dc.reads != 1 {
		t.Errorf("deadline set %d times over 1 s with a 1 s slack, want 1", dc.reads)
	}
	// A shorter timeout must take effect at once.
	c.setReadDeadline(start.Add(time.Second))
	if dc.reads != 2 || !dc.last.Equal(start.Add(time.Second)) {
		t.Errorf("after shortening: %d sets, deadline %v after the start, want 2 and 1s", dc.reads, dc.last.Sub(start))
	}
	c.stop()
	if err := c.within(false, time.Second); err != errStopped {
		t.Errorf("within after stop: %v, want errStopped", err)
	}
}
