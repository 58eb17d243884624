package main

// The soak (-tests soak): how much useful work survives an upstream that
// blips. Clients (-soak-clients, 32) fetch mail over implicit TLS, each in a
// loop of sessions: log in, UIDL, RETR up to 5 messages and check each one's
// SHA-256 against what was stored, DELE them, QUIT, then store 5 new ones.
// A failed session is tried again 100 ms later.
//
// The clients run against popproxy (TLS at the proxy, plain to Dovecot) and
// against Dovecot's own TLS port, each with users of its own, by turns in
// cycles of 15 s (-soak-time in all, 6 min), half of each target's cycles
// with a fault and half without, interleaved (see soakOrder) so that the
// machine's background load, which on a shared machine swings by the
// second, falls on both alike. A fault cycle begins, 1 s in, with Dovecot
// restarted (stopped, down 2 s, started on the same ports) or paused
// (SIGSTOP for 1.5 s, then SIGCONT), by turns: a fault every 15 s of the
// target's faulted time. No cycle without faults follows one of the same
// target with, so a slow recovery cannot hide in the other half.
//
// Every client comes from 127.0.0.1, and Dovecot answers a login during its
// shutdown with "-ERR Shutting down", no response code, which popproxy counts
// as refused credentials: a few restarts would add up to popproxy's
// failed-login block of the address (30 in 15 min), and every client would be
// refused for 15 min. So the clients' address is a trusted network, exempt
// from failed-login penalties, unless -soak-penalties.
//
// Reported per target: verified RETRs per second without and with faults,
// and the "work kept": the median, over pairs of a cycle with a fault and
// the nearest one of the same target without (see soakOrder), of their
// ratio, which background load disturbs less than the ratio of the totals;
// for each fault, the time from Dovecot
// greeting again (a probe polls its port every 10 ms) to the first login
// that succeeded through the target; and the mailboxes' integrity at the end:
// a message is corrupt if its SHA-256 differs, lost if it is gone although
// no QUIT that followed its DELE was answered +OK, and undeleted if it is
// still there although one was (RFC 1939 §6: deletions are committed iff
// QUIT is answered +OK). A QUIT that got no answer at all leaves the commit
// unknown; such messages are counted apart, never as lost or undeleted.

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/popproxy/popproxy/internal/testdovecot"
)

const sectionSoak = "soak"

const (
	soakMailbox     = 10 // messages in each mailbox at the start
	soakBatch       = 5  // messages a session retrieves, deletes and replaces
	soakCycle       = 15 * time.Second
	soakFaultAt     = time.Second // into a cycle
	soakRestartDown = 2 * time.Second
	soakPauseDown   = 1500 * time.Millisecond
	soakRetry       = 100 * time.Millisecond
	soakOpTimeout   = 30 * time.Second
)

// soakUser is the user of client i against the target named prefix.
func soakUser(prefix string, i int) string { return fmt.Sprintf("soak-%s-%02d", prefix, i) }

// soakUsers returns the users the soak needs in Dovecot, for clients
// clients per target.
func soakUsers(clients int) []string {
	var users []string
	for _, prefix := range []string{"direct", "popproxy"} {
		for i := range clients {
			users = append(users, soakUser(prefix, i))
		}
	}
	return users
}

// soakBox is one client's mailbox as the client knows it.
type soakBox struct {
	dc        *testdovecot.Instance
	user      string
	gen       *mailGenerator
	sums      map[string][sha256.Size]byte // every message ever stored, by UIDL
	committed map[string]bool              // DELEd, and QUIT was answered +OK
	unknown   map[string]bool              // DELEd, and QUIT was sent but not answered
}

func newSoakBox(dc *testdovecot.Instance, user string, seed int64) *soakBox {
	return &soakBox{dc: dc, user: user, gen: newMailGenerator(seed), sums: map[string][sha256.Size]byte{},
		committed: map[string]bool{}, unknown: map[string]bool{}}
}

// fill stores n new messages of 2-50 KB.
func (box *soakBox) fill(n int) error {
	for range n {
		msg := box.gen.text(minText + box.gen.rnd.Intn(maxText-minText))
		uidl, err := box.dc.AddMessage(box.user, msg)
		if err != nil {
			return err
		}
		box.sums[uidl] = sha256.Sum256(msg)
	}
	return nil
}

// soakFault is one outage of Dovecot.
type soakFault struct {
	kind    string        // "restart" or "pause"
	down    time.Duration // from the fault to Dovecot greeting again
	greeted time.Time
	first   time.Duration // from greeted to the first login through the target; -1 if none
}

// soakPhase is what the clients of one target did in its cycles with faults,
// or in those without.
type soakPhase struct {
	elapsed     time.Duration
	cycles      []float64    // verified RETRs per second of each cycle
	retrs       atomic.Int64 // verified
	corrupt     atomic.Int64
	sessions    atomic.Int64 // ended with QUIT answered +OK
	failed      atomic.Int64
	quitRefused atomic.Int64 // QUIT answered -ERR
	mu          sync.Mutex
	logins      []time.Time // successful logins in the current cycle
	faults      []soakFault
}

// soakOrder is the pattern of cycles the soak repeats: each target's cycles
// with and without faults sit at the same mean position, the n-th cycle of
// a target with a fault is at most two cycles from its n-th without, and a
// cycle without faults never comes right after one of the same target with.
var soakOrder = []struct {
	target int // 0 direct, 1 popproxy
	faults bool
}{
	{1, false}, {0, false}, {1, true}, {0, true},
	{0, true}, {1, true}, {0, false}, {1, false},
}

func (ph *soakPhase) loggedIn() {
	ph.mu.Lock()
	ph.logins = append(ph.logins, time.Now())
	ph.mu.Unlock()
}

// firstLogins fills in the first login after Dovecot greeted again for the
// faults of the current cycle, from index from on.
func (ph *soakPhase) firstLogins(from int) {
	slices.SortFunc(ph.logins, func(a, b time.Time) int { return a.Compare(b) })
	for i := from; i < len(ph.faults); i++ {
		f := &ph.faults[i]
		f.first = -1
		j, _ := slices.BinarySearchFunc(ph.logins, f.greeted, func(a, b time.Time) int { return a.Compare(b) })
		if j < len(ph.logins) {
			f.first = ph.logins[j].Sub(f.greeted)
		}
	}
}

// soak runs the soak and adds its figures to the report.
func (b *bench) soak() error {
	limits := limitsHigh
	if !b.o.soakPenalties {
		limits += "  trusted_networks: [127.0.0.0/8]\n"
	}
	p, err := startProxyConf(b.proxyBin, b.work, "soak", proxyConf{
		upstream: b.dc.Addr(), audit: b.o.audit, limits: limits, cert: b.cert, clients: clientTLS(b.cert)})
	if err != nil {
		return err
	}
	defer p.stop()
	targets := []target{dovecotTLS("direct", b.dc, b.cert, nil), p.target("popproxy", b.direct)}
	boxes := make([][]*soakBox, len(targets))
	for ti, t := range targets {
		for i := range b.o.soakClients {
			box := newSoakBox(b.dc, soakUser(t.name, i), b.o.seed+int64(100*ti+i))
			if err := box.fill(soakMailbox); err != nil {
				return err
			}
			boxes[ti] = append(boxes[ti], box)
		}
		if err := warmUp(t, boxes[ti][0].user); err != nil {
			return err
		}
	}
	phases := make([][2]*soakPhase, len(targets)) // [target][faults]
	for ti := range phases {
		phases[ti] = [2]*soakPhase{{}, {}}
	}
	cycles := max(int(b.o.soakTime/soakCycle)/len(soakOrder), 1) * len(soakOrder)
	for i := range cycles {
		o := soakOrder[i%len(soakOrder)]
		t, ph := targets[o.target], phases[o.target][btoi(o.faults)]
		fault := ""
		if o.faults {
			fault = [2]string{"restart", "pause"}[len(ph.faults)%2]
		}
		if err := runSoakCycle(b.dc, t, boxes[o.target], fault, ph); err != nil {
			return err
		}
		progress("soak cycle %d/%d: %s, fault %q: %.1f verified RETRs/s", i+1, cycles, t.name, fault, ph.cycles[len(ph.cycles)-1])
	}
	// Let any QUIT still in Dovecot's hands finish before looking.
	time.Sleep(2 * time.Second)
	integrity := make([]soakIntegrity, len(targets))
	for ti := range targets {
		for _, box := range boxes[ti] {
			if err := integrity[ti].check(b.dc, box); err != nil {
				return err
			}
		}
		integrity[ti].corrupt = phases[ti][0].corrupt.Load() + phases[ti][1].corrupt.Load()
	}
	b.soakReport(targets, phases, integrity)
	return p.stop()
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// runSoakCycle runs one client per box against t for a cycle, with a fault
// of the kind named ("" for none), and adds what they did to ph.
func runSoakCycle(dc *testdovecot.Instance, t target, boxes []*soakBox, fault string, ph *soakPhase) error {
	ph.logins = nil
	firstFault := len(ph.faults)
	before := ph.retrs.Load()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, box := range boxes {
		wg.Go(func() { soakClient(t, box, ph, stop) })
	}
	faultErr := make(chan error, 1)
	go injectFault(dc, fault, ph, faultErr)
	time.Sleep(soakCycle)
	close(stop)
	wg.Wait()
	ph.elapsed += soakCycle
	ph.cycles = append(ph.cycles, float64(ph.retrs.Load()-before)/soakCycle.Seconds())
	if err := <-faultErr; err != nil {
		return err
	}
	ph.firstLogins(firstFault)
	return nil
}

// soakClient runs sessions for box until stop is closed.
func soakClient(t target, box *soakBox, ph *soakPhase, stop <-chan struct{}) {
	for {
		err := soakSession(t, box, ph, stop)
		select {
		case <-stop:
			return
		default:
		}
		if err != nil {
			ph.failed.Add(1)
			select {
			case <-stop:
				return
			case <-time.After(soakRetry):
			}
		}
	}
}

// soakSession is one session of box's client: log in, UIDL, RETR and check
// up to soakBatch messages, DELE them, QUIT, and replace what QUIT deleted.
func soakSession(t target, box *soakBox, ph *soakPhase, stop <-chan struct{}) error {
	c, err := dial(t, 64<<10)
	if err != nil {
		return err
	}
	done := make(chan struct{})
	defer close(done)
	defer c.conn.Close()
	go closeOnStop(c.conn, stop, done)
	c.deadline(soakOpTimeout)
	if err := c.login(box.user, password); err != nil {
		return err
	}
	ph.loggedIn()
	if _, err := c.cmd("UIDL"); err != nil {
		return err
	}
	listing, err := c.lines()
	if err != nil {
		return err
	}
	var marked []string
	for _, line := range listing[:min(len(listing), soakBatch)] {
		n, uidl, _ := strings.Cut(line, " ")
		c.deadline(soakOpTimeout)
		if _, err := c.cmd("RETR", n); err != nil {
			return err
		}
		sum, err := c.bodySum()
		if err != nil {
			return err
		}
		if want, ok := box.sums[uidl]; !ok || sum != want {
			ph.corrupt.Add(1)
			return fmt.Errorf("%s: message %s (%s) is not what was stored", box.user, n, uidl)
		}
		ph.retrs.Add(1)
		if _, err := c.cmd("DELE", n); err != nil {
			return err
		}
		marked = append(marked, uidl)
	}
	committed, err := c.quitCommits()
	for _, uidl := range marked {
		switch {
		case err != nil:
			box.unknown[uidl] = true
		case committed:
			box.committed[uidl] = true
		}
	}
	switch {
	case err != nil:
		return fmt.Errorf("QUIT: no answer: %w", err)
	case !committed:
		ph.quitRefused.Add(1)
		return errors.New("QUIT: -ERR")
	}
	ph.sessions.Add(1)
	return box.fill(len(marked))
}

// closeOnStop closes conn when stop is closed, ending a session cut short by
// the end of a phase, unless done is closed first.
func closeOnStop(conn net.Conn, stop, done <-chan struct{}) {
	select {
	case <-stop:
		conn.Close()
	case <-done:
	}
}

// quitCommits sends QUIT and reports whether it was answered +OK. An error
// means no answer came: whether the deletions were committed is unknown.
func (c *client) quitCommits() (bool, error) {
	if _, err := c.conn.Write([]byte("QUIT\r\n")); err != nil {
		return false, nil // not sent, so nothing was committed
	}
	line, err := c.r.ReadSlice('\n')
	if err != nil {
		return false, err
	}
	return bytes.HasPrefix(line, []byte("+OK")), nil
}

// lines reads a multi-line body of short lines (UIDL) without its
// terminator.
func (c *client) lines() ([]string, error) {
	var out []string
	for {
		line, err := c.r.ReadSlice('\n')
		if err != nil {
			return nil, err
		}
		s := strings.TrimSuffix(string(line), "\r\n")
		if s == "." {
			return out, nil
		}
		out = append(out, s)
	}
}

// bodySum reads a RETR body to its terminator, undoes the dot-stuffing and
// returns the SHA-256 of the message as it was stored.
func (c *client) bodySum() ([sha256.Size]byte, error) {
	h := sha256.New()
	lineStart := true
	for {
		line, err := c.r.ReadSlice('\n')
		if err != nil && err != bufio.ErrBufferFull {
			return [sha256.Size]byte{}, err
		}
		if lineStart {
			if string(line) == ".\r\n" {
				return [sha256.Size]byte(h.Sum(nil)), nil
			}
			line = bytes.TrimPrefix(line, []byte("."))
		}
		h.Write(line)
		lineStart = err == nil
	}
}

// injectFault takes dc down soakFaultAt into the cycle, as kind says,
// "restart" or "pause" ("" for no fault), brings it back, records the fault
// in ph once Dovecot greets again, and sends the outcome to done.
func injectFault(dc *testdovecot.Instance, kind string, ph *soakPhase, done chan<- error) {
	if kind == "" {
		done <- nil
		return
	}
	time.Sleep(soakFaultAt)
	down, up, wait := dc.Stop, dc.Restart, soakRestartDown
	if kind == "pause" {
		down, up, wait = dc.Pause, dc.Resume, soakPauseDown
	}
	began := time.Now()
	if err := down(); err != nil {
		done <- fmt.Errorf("soak: %s: %w", kind, err)
		return
	}
	greeted := make(chan time.Time, 1)
	go func() { greeted <- dc.Greeted(nil) }()
	// Dovecot's master closes its ports at once, but with many sessions its
	// stop can take seconds more (5 s seen): the outage counts from the fault.
	time.Sleep(time.Until(began.Add(wait)))
	if err := up(); err != nil {
		done <- fmt.Errorf("soak: %s: back: %w", kind, err)
		return
	}
	f := soakFault{kind: kind, greeted: <-greeted}
	f.down = f.greeted.Sub(began)
	ph.mu.Lock()
	ph.faults = append(ph.faults, f)
	ph.mu.Unlock()
	done <- nil
}

// soakIntegrity counts the messages whose fate broke RFC 1939 §6.
type soakIntegrity struct {
	checked, corrupt, lost, undeleted int64
	unknownGone, unknownKept          int64
}

// check compares box's mailbox in Dovecot with what its sessions were told.
func (in *soakIntegrity) check(dc *testdovecot.Instance, box *soakBox) error {
	ids, err := dc.Messages(box.user)
	if err != nil {
		return err
	}
	present := map[string]bool{}
	for _, id := range ids {
		present[id] = true
	}
	for uidl := range box.sums {
		in.checked++
		switch {
		case box.unknown[uidl] && present[uidl]:
			in.unknownKept++
		case box.unknown[uidl]:
			in.unknownGone++
		case box.committed[uidl] && present[uidl]:
			in.undeleted++
		case !box.committed[uidl] && !present[uidl]:
			in.lost++
		}
	}
	return nil
}

// soakReport adds the soak's metrics; targets[1] is popproxy, held to the
// goals, targets[0] Dovecot's own TLS, a reference.
func (b *bench) soakReport(targets []target, phases [][2]*soakPhase, integrity []soakIntegrity) {
	perSecond := func(ph *soakPhase) float64 { return float64(ph.retrs.Load()) / ph.elapsed.Seconds() }
	soakMetric := func(name, unit string, g goal, value func(ti int) (float64, []float64)) metric {
		m := metric{Section: sectionSoak, Name: name, Unit: unit, goal: g}
		for ti, t := range targets {
			v, runs := value(ti)
			m.Values = append(m.Values, targetValue{Target: t.name, Median: v, Runs: runs, Reference: ti == 0})
		}
		return m
	}
	// A fault after which no login succeeded counts as a whole cycle.
	firstLogins := func(ti int, kind string) (float64, []float64) {
		var ms []float64
		for _, f := range phases[ti][1].faults {
			if f.kind != kind {
				continue
			}
			if f.first < 0 {
				f.first = soakCycle
			}
			ms = append(ms, float64(f.first.Microseconds())/1000)
		}
		if len(ms) == 0 {
			return 0, nil
		}
		return slices.Max(ms), ms
	}
	rates := func(faults int) func(ti int) (float64, []float64) {
		return func(ti int) (float64, []float64) {
			ph := phases[ti][faults]
			return perSecond(ph), ph.cycles
		}
	}
	b.rep.Metrics = append(b.rep.Metrics,
		soakMetric("verified RETRs per second, no faults", "/s", goal{}, rates(0)),
		soakMetric("verified RETRs per second, under faults", "/s", goal{}, rates(1)),
		soakMetric("work kept: under faults / no faults, median of paired cycles", "×", atLeast(0.8, "×"), func(ti int) (float64, []float64) {
			clean, faulted := phases[ti][0].cycles, phases[ti][1].cycles
			ratios := make([]float64, min(len(clean), len(faulted)))
			for i := range ratios {
				ratios[i] = faulted[i] / clean[i]
			}
			return median(ratios), ratios
		}),
		soakMetric("first login after a 2 s restart, worst", "ms", atMost(1000, "ms"), func(ti int) (float64, []float64) {
			return firstLogins(ti, "restart")
		}),
		soakMetric("first login after a 1.5 s pause, worst", "ms", goal{}, func(ti int) (float64, []float64) {
			return firstLogins(ti, "pause")
		}),
		soakMetric("corrupt, lost or undeleted messages", "messages", atMost(0, "messages"), func(ti int) (float64, []float64) {
			in := integrity[ti]
			v := float64(in.corrupt + in.lost + in.undeleted)
			return v, []float64{v}
		}),
	)
	for ti, t := range targets {
		in := integrity[ti]
		note := fmt.Sprintf("soak %s: work kept from the totals %.2f×; %d messages checked: %d corrupt, %d lost, %d undeleted; %d whose QUIT went unanswered (%d gone, %d kept)",
			t.name, perSecond(phases[ti][1])/perSecond(phases[ti][0]),
			in.checked, in.corrupt, in.lost, in.undeleted, in.unknownGone+in.unknownKept, in.unknownGone, in.unknownKept)
		for faults, ph := range phases[ti] {
			note += fmt.Sprintf("; %s: %d sessions committed, %d failed (%d QUITs answered -ERR)",
				map[int]string{0: "no faults", 1: "faults"}[faults], ph.sessions.Load(), ph.failed.Load(), ph.quitRefused.Load())
		}
		var fs []string
		for _, f := range phases[ti][1].faults {
			first := "none"
			if f.first >= 0 {
				first = "+" + f.first.Round(time.Millisecond).String()
			}
			fs = append(fs, fmt.Sprintf("%s down %s, first login %s", f.kind, f.down.Round(time.Millisecond), first))
		}
		b.rep.Notes = append(b.rep.Notes, note, "soak "+t.name+" faults: "+strings.Join(fs, "; "))
	}
}
