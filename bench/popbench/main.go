// Command popbench measures popproxy against the Dovecot behind it: in one run
// it starts a private Dovecot (internal/testdovecot) with a generated mailbox,
// starts popproxy as a separate process in front of it, and measures the same
// workloads against Dovecot directly and through the proxy. The two take turns
// about every second (see interleave in compare.go), so that background load,
// which on a shared machine changes from one second to the next, falls on
// both alike; each comparison is repeated -rounds times and the median kept.
//
// Usage:
//
//	go run ./bench/popbench [-size MB] [-proxy PATH] [-json FILE] [-rounds N] ...
//	bench/run.sh -size 20             builds both binaries, writes bench/results/
//
// With -relay two more targets, minimal TCP relays (relay.go), show what one
// more user-space hop costs by itself: tcp-relay in Go with a goroutine per
// direction, and epoll-relay (epoll.go) on one thread over raw epoll, without
// Go's netpoller and scheduler. Unless -nginx=false, nginx's mail
// proxy (nginx.go) is measured too, as a peer: its ratio to direct and
// popproxy's ratio to it are reported.
//
// Measurements, by -tests name (see the file of each):
//
//	retr         retr.go      bulk RETR throughput, every message in order, by an ordinary
//	                          client and by one that re-arms TCP_QUICKACK after every read
//	                          (nginx, which stalls on the first, fetches only the first
//	                          64 MB with it)
//	noop         noop.go      NOOP round-trip latency, p50 and p99
//	sessions     sessions.go  sessions per second: connect, USER/PASS, QUIT, close
//	idle         idle.go      proxy RSS per idle logged-in session
//	slow         slow.go      proxy RSS growth while a slow client fetches a 100 MB message
//
// and, only when named, variants printed in tables of their own:
//
//	tls-retr, tls-handshakes, tls-idle   tls.go       implicit TLS: popproxy against
//	                                                  stunnel4 and Dovecot's own TLS
//	tls-idle-10k                         idle10k.go   proxy RSS and descriptors with 10,000
//	                                                  idle TLS sessions (-idle-10k) to an
//	                                                  in-process internal/maildrop
//	audit-retr, limits-retr              variants.go  RETR with audit on against off,
//	                                                  and with default limits against none
//	shared-sessions                      shared.go    sessions/s with limits.shared in a
//	                                                  private redis-server against without
//	soak                                 soak.go      work kept while Dovecot is restarted
//	                                                  or paused every 15 s, over TLS
//
// It reads /proc and so runs on Linux only.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/popproxy/popproxy/internal/testdovecot"
)

// Users of the private Dovecot. All share one password.
const (
	userBulk  = "bulk"  // the large mailbox for RETR
	userLight = "light" // a few small messages: cheap logins, NOOP, idle sessions
	userSlow  = "slow"  // one 100 MB message for the slow reader
	password  = "bench-secret"
)

// options are the command-line flags.
type options struct {
	sizeMB        int
	seed          int64
	proxyBin      string
	jsonPath      string
	audit         string
	rounds        int
	noops         int
	clients       int
	sessionTime   time.Duration
	idle          int
	idle10k       int
	slowMB        int
	slowRate      float64
	soakClients   int
	soakTime      time.Duration
	soakPenalties bool
	tests         map[string]bool
	relay         bool
	nginx         bool
	keep          bool
}

// defaultTests run without -tests; allTests are those -tests accepts.
var (
	defaultTests = []string{"retr", "noop", "sessions", "idle", "slow"}
	allTests     = append(slices.Clone(defaultTests), "tls-retr", "tls-handshakes", "tls-idle", "tls-idle-10k", "audit-retr", "limits-retr", "shared-sessions", "soak")
)

func main() {
	for _, r := range relays {
		if len(os.Args) == 4 && os.Args[1] == r.command {
			if err := r.main(os.Args[2], os.Args[3]); err != nil {
				fmt.Fprintf(os.Stderr, "popbench %s: %v\n", r.command, err)
				os.Exit(1)
			}
			return
		}
	}
	var o options
	var tests string
	flag.IntVar(&o.sizeMB, "size", 200, "size of the bulk mailbox in `MB` (10^6 bytes)")
	flag.Int64Var(&o.seed, "seed", 1939, "seed of the mailbox generator")
	flag.StringVar(&o.proxyBin, "proxy", "", "popproxy `binary`; if empty, built with go build")
	flag.StringVar(&o.jsonPath, "json", "", "also write the results as JSON to `file`")
	flag.StringVar(&o.audit, "audit", "off", "proxy audit output: off (/dev/null), file, or stdout (to a file)")
	flag.IntVar(&o.rounds, "rounds", 5, "times each comparison runs per target; the median is reported")
	flag.IntVar(&o.noops, "noops", 20000, "NOOPs per latency measurement")
	flag.IntVar(&o.clients, "clients", 64, "concurrent clients of the sessions/s measurement (the default tests also measure 8)")
	flag.DurationVar(&o.sessionTime, "duration", 5*time.Second, "sessions/s load per target per round, in 1s windows")
	flag.IntVar(&o.idle, "idle", 2000, "idle logged-in sessions for the memory measurement")
	flag.IntVar(&o.idle10k, "idle-10k", 10000, "idle logged-in TLS sessions of tls-idle-10k")
	flag.IntVar(&o.slowMB, "slow-size", 100, "size of the slow reader's message in `MB`")
	flag.Float64Var(&o.slowRate, "slow-rate", 20, "slow reader's speed in `MB/s`")
	flag.IntVar(&o.soakClients, "soak-clients", 32, "concurrent TLS clients per target in the soak")
	flag.DurationVar(&o.soakTime, "soak-time", 6*time.Minute, "length of the soak, in cycles of 15 s, 8 at least")
	flag.BoolVar(&o.soakPenalties, "soak-penalties", false, "keep popproxy's failed-login penalties for the soak clients' address (see soak.go)")
	flag.StringVar(&tests, "tests", strings.Join(defaultTests, ","), "comma-separated measurements to run, of "+strings.Join(allTests, ","))
	flag.BoolVar(&o.relay, "relay", false, "also measure two minimal TCP relays, in Go and on raw epoll (references for one more hop)")
	flag.BoolVar(&o.nginx, "nginx", true, "also measure nginx's mail proxy (nginx-light, libnginx-mod-mail) as a peer in retr, noop and sessions")
	flag.BoolVar(&o.keep, "keep", false, "keep the work folder (configs, logs, maildirs)")
	flag.Parse()
	if flag.NArg() > 0 {
		flag.Usage()
		os.Exit(2)
	}
	o.tests = map[string]bool{}
	for _, t := range strings.Split(tests, ",") {
		if !slices.Contains(allTests, t) {
			fmt.Fprintf(os.Stderr, "popbench: unknown test %q (have %s)\n", t, strings.Join(allTests, ", "))
			os.Exit(2)
		}
		o.tests[t] = true
	}
	if o.audit != "off" && o.audit != "file" && o.audit != "stdout" {
		fmt.Fprintf(os.Stderr, "popbench: -audit %q is not one of off, file, stdout\n", o.audit)
		os.Exit(2)
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "popbench:", err)
		os.Exit(1)
	}
}

// progress writes a timestamped line to stderr; the report goes to stdout.
func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// run sets everything up, measures, and reports.
func run(o options) (err error) {
	work, err := os.MkdirTemp("", "popbench")
	if err != nil {
		return err
	}
	// Dovecot's unprivileged processes must traverse it.
	if err := os.Chmod(work, 0o755); err != nil {
		return err
	}
	defer func() {
		if err != nil || o.keep {
			progress("work folder kept: %s", work)
		} else {
			os.RemoveAll(work)
		}
	}()
	stopOnSignal()

	bin := o.proxyBin
	if bin == "" {
		bin = filepath.Join(work, "popproxy")
		progress("building popproxy")
		if err := buildProxy(bin); err != nil {
			return err
		}
	}

	dcConf := testdovecot.Config{
		Dir:            filepath.Join(work, "dovecot"),
		Users:          map[string]string{userBulk: password, userLight: password, userSlow: password},
		MaxConnections: o.idle + 500,
	}
	if o.tests["soak"] {
		for _, u := range soakUsers(o.soakClients) {
			dcConf.Users[u] = password
		}
	}
	// The TLS measurements need Dovecot's own TLS port too.
	var cert *benchCert
	if o.tests["tls-retr"] || o.tests["tls-handshakes"] || o.tests["tls-idle"] || o.tests["soak"] {
		if cert, err = newCert(work, "ecdsa", false); err != nil {
			return err
		}
		dcConf.TLSCert, dcConf.TLSKey = cert.certFile, cert.keyFile
	}
	progress("starting dovecot")
	dc, err := testdovecot.Start(dcConf)
	if err != nil {
		return err
	}
	atExit(func() { dc.Stop() })
	defer dc.Stop()

	rep := &report{
		Started:   time.Now().UTC(),
		CPUs:      runtime.NumCPU(),
		Rounds:    evenRounds(o.rounds),
		Audit:     o.audit,
		Seed:      o.seed,
		GoVersion: runtime.Version(),
		LoadStart: loadAverage(),
	}
	rep.Notes = append(rep.Notes, fmt.Sprintf("every comparison: %d rounds (-rounds made even), "+
		"the targets' order reversed every other round", evenRounds(o.rounds)))
	b := bench{o: o, work: work, proxyBin: bin, dc: dc, direct: dovecotTarget("direct", dc), cert: cert, rep: rep}
	if o.tests["retr"] || o.tests["noop"] || o.tests["sessions"] {
		if err := b.comparisons(); err != nil {
			return err
		}
	}
	if o.tests["idle"] {
		if err := b.idle(); err != nil {
			return err
		}
	}
	if o.tests["slow"] {
		if err := b.slow(); err != nil {
			return err
		}
	}
	if o.tests["tls-retr"] || o.tests["tls-handshakes"] {
		if err := b.tlsComparisons(); err != nil {
			return err
		}
	}
	if o.tests["tls-idle"] {
		if err := b.tlsIdle(); err != nil {
			return err
		}
	}
	if o.tests["tls-idle-10k"] {
		if err := b.tlsIdle10k(); err != nil {
			return err
		}
	}
	if o.tests["audit-retr"] {
		if err := b.auditRETR(); err != nil {
			return err
		}
	}
	if o.tests["limits-retr"] {
		if err := b.limitsRETR(); err != nil {
			return err
		}
	}
	if o.tests["shared-sessions"] {
		if err := b.sharedSessions(); err != nil {
			return err
		}
	}
	if o.tests["soak"] {
		if err := b.soak(); err != nil {
			return err
		}
	}

	rep.Duration = time.Since(rep.Started).Round(time.Second).String()
	rep.LoadEnd = loadAverage()
	if o.jsonPath != "" {
		if err := rep.writeJSON(o.jsonPath); err != nil {
			return err
		}
		progress("JSON written to %s", o.jsonPath)
	}
	rep.writeTable(os.Stdout)
	return nil
}

// bench is what the measurements of one run share.
type bench struct {
	o        options
	work     string // work folder
	proxyBin string
	dc       *testdovecot.Instance
	direct   target     // Dovecot's plain port
	cert     *benchCert // Dovecot's certificate, for the TLS measurements
	want     []int64    // the bulk mailbox, once filled: see bulk
	rep      *report
}

// bulk fills the bulk mailbox (and the light one) on its first call, and
// returns the RETR body octets of each message.
func (b *bench) bulk() ([]int64, error) {
	if b.want != nil {
		return b.want, nil
	}
	start := time.Now()
	mb, err := fillMailbox(b.dc, userBulk, int64(b.o.sizeMB)*1e6, b.o.seed)
	if err != nil {
		return nil, err
	}
	b.rep.MailboxBytes, b.rep.Messages = mb.bytes, len(mb.want)
	progress("mailbox: %d messages, %.1f MB in %v", len(mb.want), float64(mb.bytes)/1e6, time.Since(start).Round(time.Millisecond))
	b.want = mb.want
	return b.want, fillLight(b.dc, b.o.seed)
}

// comparisons fills the bulk mailbox, starts a proxy (with -relay the
// reference relays, with -nginx nginx's mail proxy) and runs the
// direct-versus-proxy comparisons.
func (b *bench) comparisons() error {
	want, err := b.bulk()
	if err != nil {
		return err
	}

	p, err := startProxy(b.proxyBin, b.work, "main", b.dc.Addr(), b.o.audit)
	if err != nil {
		return err
	}
	defer p.stop()
	targets := []target{b.direct}
	if b.o.relay {
		for _, rl := range relays {
			r, err := startRelay(b.work, rl.command, b.dc.Addr())
			if err != nil {
				return err
			}
			defer r.stop()
			ref := r.target(rl.target, b.direct)
			ref.reference = true
			targets = append(targets, ref)
		}
	}
	var extra [][2]string
	var ngx *nginxPeer
	if b.o.nginx {
		if ngx, err = startNginx(b.work, "nginx", b.dc.Addr()); err != nil {
			return err
		}
		defer ngx.stop()
		peer := ngx.target("nginx", b.direct)
		peer.reference = true
		peer.stallsOnDelayedACK = true
		targets = append(targets, peer)
		extra = [][2]string{{"popproxy", "nginx"}}
	}
	targets = append(targets, p.target("popproxy", b.direct))
	for _, t := range targets {
		if err := warmUp(t, userBulk, userLight); err != nil {
			return err
		}
	}
	var comps []comparison
	if b.o.tests["retr"] {
		comps = append(comps, retrComparison(want, ordinaryClient, quickAckClient))
		if starts := retrBlocks(want); ngx != nil && len(starts) > 2 {
			var first int64
			for _, w := range want[:starts[1]] {
				first += w
			}
			b.rep.Notes = append(b.rep.Notes, fmt.Sprintf("retr: with the ordinary client nginx fetched only the first "+
				"block per round, messages 1-%d of %d (%.1f MB), as it stalls on that client; with the quick-ACK "+
				"client it fetched them all, as every other target did with both", starts[1], len(want), float64(first)/1e6))
		}
	}
	if b.o.tests["noop"] {
		comps = append(comps, noopComparison(b.o.noops))
	}
	if b.o.tests["sessions"] {
		// Few clients show the latency of a login, many the throughput.
		for _, n := range slices.Compact([]int{min(8, b.o.clients), b.o.clients}) {
			c := sessionsComparison(n, b.o.sessionTime)
			for i := range c.metrics {
				c.metrics[i].name += fmt.Sprintf(", %d clients", n)
			}
			comps = append(comps, c)
		}
	}
	for i := range comps {
		comps[i].counterbalance = true // see comparison.once
		comps[i].extra = extra
	}
	if err := compare(b.rep, evenRounds(b.o.rounds), targets, comps); err != nil {
		return err
	}
	if ngx != nil {
		b.rep.Notes = append(b.rep.Notes, ngx.note())
		if err := ngx.stop(); err != nil {
			return err
		}
	}
	return p.stop()
}

// idle measures the memory of idle sessions with a proxy of its own, so that
// earlier measurements leave nothing in its heap.
func (b *bench) idle() error {
	if err := fillLight(b.dc, b.o.seed); err != nil {
		return err
	}
	p, err := startProxy(b.proxyBin, b.work, "idle", b.dc.Addr(), b.o.audit)
	if err != nil {
		return err
	}
	defer p.stop()
	m, err := measureIdle(p.target("popproxy", b.direct), p.pid(), b.o.idle)
	if err != nil {
		return err
	}
	b.rep.Metrics = append(b.rep.Metrics, m)
	return p.stop()
}

// slow measures the slow reader with a proxy of its own.
func (b *bench) slow() error {
	if err := fillLight(b.dc, b.o.seed); err != nil {
		return err
	}
	want, err := fillSlow(b.dc, int64(b.o.slowMB)*1e6, b.o.seed)
	if err != nil {
		return err
	}
	p, err := startProxy(b.proxyBin, b.work, "slow", b.dc.Addr(), b.o.audit)
	if err != nil {
		return err
	}
	defer p.stop()
	m, err := measureSlowReader(p.target("popproxy", b.direct), p.pid(), b.o.slowRate*1e6, want)
	if err != nil {
		return err
	}
	b.rep.Metrics = append(b.rep.Metrics, m)
	return p.stop()
}

var (
	exitMu    sync.Mutex
	exitFuncs []func()
)

// atExit registers f to run if popbench is interrupted, so that no Dovecot
// or popproxy outlives it. On a normal return the deferred stops do the job.
func atExit(f func()) {
	exitMu.Lock()
	defer exitMu.Unlock()
	exitFuncs = append(exitFuncs, f)
}

// stopOnSignal runs the atExit functions, newest first, on SIGINT or SIGTERM
// and exits.
func stopOnSignal() {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGINT, syscall.SIGTERM)
	go cleanUpOnSignal(c)
}

func cleanUpOnSignal(c <-chan os.Signal) {
	sig := <-c
	progress("%v: stopping", sig)
	exitMu.Lock()
	for i := len(exitFuncs) - 1; i >= 0; i-- {
		exitFuncs[i]()
	}
	os.Exit(130)
}

// warmUp logs in to the users' mailboxes through t and lists them, so that
// Dovecot has indexed the messages and cached their sizes before anything is
// timed.
func warmUp(t target, users ...string) error {
	for _, user := range users {
		c, err := dialLogin(t, 32<<10, user)
		if err != nil {
			return err
		}
		c.deadline(5 * time.Minute)
		if _, err := c.cmd("LIST"); err != nil {
			return fmt.Errorf("%s: %w", t.name, err)
		}
		if _, err := c.body(); err != nil {
			return fmt.Errorf("%s: LIST: %w", t.name, err)
		}
		if err := c.quit(); err != nil {
			return fmt.Errorf("%s: %w", t.name, err)
		}
	}
	return nil
}
