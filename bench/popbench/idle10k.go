package main

// The 10,000-session measurement (-tests tls-idle-10k): -idle-10k logged-in
// TLS sessions held at once through one popproxy (implicit TLS, limitsHigh),
// for its memory and descriptors. Dovecot forks a pop3 process per session,
// more than this machine's memory holds at 10,000, so the upstream is
// internal/maildrop inside popbench: a goroutine per session, and a user per
// session, since it locks a mailbox to one session, each with two small
// messages. The clients dial from 127.0.0.2 to 127.0.0.9 in turn, so that
// no address runs out of ephemeral ports (32768-60999 by default).

import (
	"fmt"
	"net"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/popproxy/popproxy/internal/maildrop"
)

const sectionIdle10k = "idle-10k"

// tlsIdle10k holds b.o.idle10k idle TLS sessions through a proxy of its own
// in front of maildrop, and reports the proxy's RSS and descriptors and
// the open-file limit they call for.
func (b *bench) tlsIdle10k() error {
	n := b.o.idle10k
	// Each session holds two descriptors in popbench (the client's and
	// maildrop's) and two in the proxy, which inherits the limit; 128 are
	// room for either's own.
	if err := raiseNoFile(uint64(2*n + 128)); err != nil {
		return fmt.Errorf("tls-idle-10k: %w; lower -idle-10k", err)
	}
	users := make(map[string]string, n+idleWarmUp)
	for i := range n + idleWarmUp {
		users[idleUser(i)] = password
	}
	md := maildrop.New(users, maildrop.Sample()[:2]) // a welcome note and a message with dot lines
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	go md.Serve(l)
	defer md.Close()
	cert, err := newCert(b.work, sectionIdle10k, false)
	if err != nil {
		return err
	}
	p, err := b.tlsProxy(sectionIdle10k, l.Addr().String(), cert)
	if err != nil {
		return err
	}
	defer p.stop()
	t := tlsTarget(fromSources(p.tcp("popproxy", target{}), p.addr), p.tls, nil)
	h, err := holdIdle(t, p.pid(), n, idleUser)
	if err != nil {
		return fmt.Errorf("tls-idle-10k: %w", err)
	}
	// Room for a quarter more, rounded up to a multiple of 1024.
	limit := (h.fds*5/4 + 1023) / 1024 * 1024
	one := func(name, unit string, v float64, g goal, detail string) metric {
		return metric{Section: sectionIdle10k, Name: name, Unit: unit, goal: g, Detail: detail,
			Values: []targetValue{{Target: t.name, Median: v, Runs: []float64{v}}}}
	}
	b.rep.Metrics = append(b.rep.Metrics,
		one("sessions held", "sessions", float64(n), atLeast(float64(n), "sessions"),
			"every session answered NOOP once all were open"),
		one("proxy RSS with the sessions open", "MiB", float64(h.after)/1024, goal{},
			fmt.Sprintf("VmRSS %d KiB after a warm-up of %d sessions, %d KiB with %d open", h.before, idleWarmUp, h.after, n)),
		one("RSS per idle TLS session", "KiB", h.perSession(), atMost(16, "KiB"), ""),
		one("proxy open descriptors", "fds", float64(h.fds), goal{},
			fmt.Sprintf("%d after the warm-up: %.2f per session", h.fdsBefore, float64(h.fds-h.fdsBefore)/float64(n))),
		one("RLIMIT_NOFILE needed", "fds", float64(limit), goal{},
			"the open descriptors and a quarter more, rounded up to a multiple of 1024"),
		one("time to open the sessions", "s", h.opening.Seconds(), goal{},
			fmt.Sprintf("%.0f sessions/s, %d at a time, each a full TLS handshake and USER/PASS", float64(n)/h.opening.Seconds(), idleOpeners)),
	)
	if err := p.stop(); err != nil {
		return err
	}
	return md.Close()
}

// idleUser is the maildrop user of session i.
func idleUser(i int) string { return "idle" + strconv.Itoa(i) }

// fromSources returns t dialing addr from 127.0.0.2 to 127.0.0.9 in turn.
func fromSources(t target, addr string) target {
	var dialers []*net.Dialer
	for host := byte(2); host <= 9; host++ {
		dialers = append(dialers, &net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, host)}})
	}
	var next atomic.Uint32
	t.dial = func() (net.Conn, error) {
		return dialers[next.Add(1)%uint32(len(dialers))].Dial("tcp", addr)
	}
	return t
}

// raiseNoFile lets popbench open need descriptors, up to the hard limit.
// Setting the limit also hands it to the children started from now on (the
// proxy): Go raises its own soft limit at start-up but gives children back
// the one it started with.
func raiseNoFile(need uint64) error {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return err
	}
	if rl.Max < need {
		return fmt.Errorf("open-file hard limit %d (ulimit -Hn) is below the %d needed", rl.Max, need)
	}
	rl.Cur = rl.Max
	return syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl)
}
