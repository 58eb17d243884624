package proxy

import (
	"errors"
	"net"
	"sync"
	"time"
)

// errStopped is returned by a stopped timeoutConn.
var errStopped = errors.New("proxy: session stopped")

// aLongTimeAgo is a deadline that has passed, to interrupt blocked I/O.
var aLongTimeAgo = time.Unix(1, 0)

// timeoutConn refreshes its deadline before every Write, and before every Read
// if readTimeout is set, so a timeout measures silence rather than the length
// of a transfer, and counts octets. With readTimeout zero the owner sets read
// deadlines itself (setReadDeadline). stop interrupts it from another
// goroutine; the mutex orders stop against deadline changes so that a stop is
// never overwritten.
type timeoutConn struct {
	net.Conn
	mu           sync.Mutex
	stopped      bool
	readTimeout  time.Duration
	writeTimeout time.Duration
	readBy       time.Time // the read deadline last set, under mu
	writeBy      time.Time // the write deadline last set, under mu
	in, out      int64     // touched only by the session goroutine
	failed       bool      // a Read or Write failed; touched only by the session goroutine
}

// slackDivisor makes a timeout of d fire after between d and d+d/16 of
// silence. Moving a deadline reprograms one of the runtime's timers; with
// the slack that happens once per d/16 instead of on every read and write.
const slackDivisor = 16

func (c *timeoutConn) Read(p []byte) (int, error) {
	if c.readTimeout > 0 {
		if err := c.within(true, c.readTimeout); err != nil {
			return 0, err
		}
	} else if c.isStopped() {
		return 0, errStopped
	}
	n, err := c.Conn.Read(p)
	c.in += int64(n)
	c.failed = c.failed || err != nil
	return n, err
}

func (c *timeoutConn) Write(p []byte) (int, error) {
	if err := c.within(false, c.writeTimeout); err != nil {
		return 0, err
	}
	n, err := c.Conn.Write(p)
	c.out += int64(n)
	c.failed = c.failed || err != nil
	return n, err
}

// within keeps the read (or write) deadline between d and d+d/slackDivisor
// from now.
func (c *timeoutConn) within(read bool, d time.Duration) error {
	return c.extend(read, time.Now().Add(d), d/slackDivisor)
}

// extend makes the read (or write) deadline fall between t and t+slack: it
// is left alone if it already does, else set to t+slack.
func (c *timeoutConn) extend(read bool, t time.Time, slack time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return errStopped
	}
	by, set := &c.writeBy, c.Conn.SetWriteDeadline
	if read {
		by, set = &c.readBy, c.Conn.SetReadDeadline
	}
	if !by.Before(t) && by.Sub(t) <= slack {
		return nil
	}
	*by = t.Add(slack)
	return set(*by)
}

// setReadTimeout changes the silence allowed between reads from now on.
func (c *timeoutConn) setReadTimeout(d time.Duration) {
	c.mu.Lock()
	c.readTimeout = d
	c.mu.Unlock()
}

// setReadDeadline sets the read deadline to t, unless stopped.
func (c *timeoutConn) setReadDeadline(t time.Time) { c.extend(true, t, 0) }

// readWithin keeps the read deadline between d and d+d/slackDivisor from
// now, unless stopped.
func (c *timeoutConn) readWithin(d time.Duration) { c.within(true, d) }

// stop makes blocked and future reads and writes fail.
func (c *timeoutConn) stop() {
	c.mu.Lock()
	c.stopped = true
	c.Conn.SetDeadline(aLongTimeAgo)
	c.mu.Unlock()
}

func (c *timeoutConn) isStopped() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stopped
}
