// Package testdovecot starts a private Dovecot POP3 server on loopback, for
// integration tests and benchmarks that need a real upstream.
//
// Each instance has its own folder (config, passwd-file, maildirs, log,
// base_dir), listens on free 127.0.0.1 ports, and never touches the system
// Dovecot service. The configuration uses Dovecot 2.3 syntax (Debian 12's
// dovecot-pop3d 2.3.19); Dovecot 2.4 changed the syntax.
//
// Typical usage in a test:
//
//	d := testdovecot.New(t, testdovecot.Config{
//		Users: map[string]string{"alice": "secret"},
//	})
//	uidl, err := d.AddMessage("alice", []byte("Subject: hi\r\n\r\nhello\r\n"))
//	...
//	c, err := net.Dial("tcp", d.Addr())
//
// Benchmarks and programs that have no testing.TB use Start and Close.
//
// # What Dovecot does with the stored bytes
//
// AddMessage stores exactly the bytes it is given. Observed with Dovecot
// 2.3.19 serving them over POP3:
//
//   - LF line endings are sent as CRLF, CRLF is kept, and lines starting
//     with "." are dot-stuffed. The size in STAT, LIST and the RETR
//     "+OK <n> octets" line is the size with CRLF line endings, before
//     dot-stuffing.
//   - A message that does not end with a newline is sent with CRLF added
//     before the terminating ".\r\n"; that CRLF is not in its size.
//   - So an empty (0-byte) message is listed with size 0, and RETR sends
//     "+OK 0 octets\r\n", then an empty line "\r\n", then ".\r\n".
//
// Messages are served in the order AddMessage added them. A failed login is
// answered after about 0.5 s (Dovecot 2.3 waits for a timer), but later
// logins from the same address are not delayed.
package testdovecot

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/popproxy/popproxy/internal/testproc"
)

// ErrNotFound is returned by Start when no dovecot binary is found.
var ErrNotFound = errors.New("dovecot not found: install it with `apt-get install -y dovecot-pop3d` (or run go test -short to skip integration tests)")

// Config describes an instance. Zero values get defaults.
type Config struct {
	// Dir is the working folder. It is created if needed and made mode
	// 0755, because Dovecot's unprivileged users must traverse it; its
	// parent folders must be traversable too (t.TempDir's are not). Its
	// path must be short: Dovecot's unix sockets live in Dir/run, and a
	// socket path has at most 108 bytes. If empty, Start makes one under
	// os.TempDir, and Close removes it.
	Dir string

	// Users maps user names to passwords, stored with the PLAIN scheme in
	// a passwd-file. Each user gets an empty Maildir. Names may not
	// contain ':', '/', whitespace or control characters, nor start with
	// '.'; passwords may not contain ':' or control characters.
	Users map[string]string

	// TLSCert and TLSKey are paths to PEM files. When both are set, a
	// pop3s listener (TLSAddr) is started too, and STLS is offered on the
	// plain port. If empty, TLS is off.
	TLSCert, TLSKey string

	// MaxConnections is the number of concurrent POP3 sessions Dovecot
	// must accept; process and client limits are raised to match. If
	// zero, 2500.
	MaxConnections int

	// HAProxy starts an extra plain POP3 listener, HAProxyAddr, where every
	// connection from 127.0.0.0/8 must begin with a PROXY protocol v1 or v2
	// header; Dovecot takes the header's source address as the client's
	// (rip= in the log).
	HAProxy bool

	// LoginTrusted makes clients from 127.0.0.0/8 trusted proxies
	// (login_trusted_networks). Dovecot 2.3.19 then greets them "+OK
	// [XCLIENT] Dovecot (Debian) ready." and takes "XCLIENT ADDR=<ip>
	// PORT=<port> SESSION=<id> TTL=<n>" before a login, which it then logs
	// as from ADDR with SESSION as its id (see WaitLog). Other clients'
	// XCLIENT gets "+OK You are not from trusted IP - ignoring": only the
	// greeting tells whether XCLIENT works.
	LoginTrusted bool

	// OAuth2IntrospectionURL, if set, offers SASL OAUTHBEARER and XOAUTH2
	// too: every token is POSTed to this URL (RFC 7662 introspection, no
	// caching; see NewIntrospection), and a login succeeds when the answer
	// has "active": true and "username" the user logging in. Such a user
	// still needs an entry in Users, for the mailbox.
	OAuth2IntrospectionURL string
}

// Instance is a running private Dovecot. Its methods are safe for
// concurrent use.
type Instance struct {
	cfg      Config // with defaults; paths absolute
	bin      string
	ownDir   bool // Start made cfg.Dir; Close removes it
	uid, gid int  // owner of the maildirs and of the mail processes
	ports    ports
	seq      atomic.Int64 // messages added so far

	mu      sync.Mutex
	pgid    int           // Dovecot's master, leader of its process group
	done    chan struct{} // closed once the master has been reaped
	stopped bool
	stopErr error
}

// New starts an instance for a test and registers its Close on t.Cleanup;
// on failure it calls t.Fatal, which says how to install a missing
// Dovecot. With go test -short it skips the test instead. If the test has
// failed, the end of Dovecot's log goes to the test log.
func New(t testing.TB, cfg Config) *Instance {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: needs dovecot")
	}
	d, err := Start(cfg)
	if err != nil {
		t.Fatalf("start dovecot: %v", err)
	}
	t.Cleanup(func() {
		if err := d.Stop(); err != nil {
			t.Errorf("stop dovecot: %v", err)
		}
		if t.Failed() {
			t.Logf("dovecot log %s (end):\n%s", d.logPath(), testproc.LastLines(d.logSince(0), 30))
		}
		if err := d.removeDir(); err != nil {
			t.Errorf("remove dovecot folder: %v", err)
		}
	})
	return d
}

// Start writes the configuration, passwd-file and maildirs, starts
// `dovecot -F -c <Dir>/dovecot.conf`, and returns once the plain POP3 port
// greets. Ports are chosen free on 127.0.0.1; if one is taken before
// Dovecot binds it, Start tries again with new ports, up to 3 times. If
// Start returns an error, no process is left running. Call Stop (or Close)
// when done with the instance.
//
// Side effect: from the first Start on, child processes of this program
// inherit its raised open-file limit; see inheritFileLimit.
func Start(cfg Config) (*Instance, error) {
	bin, err := findDovecot()
	if err != nil {
		return nil, err
	}
	if (cfg.TLSCert == "") != (cfg.TLSKey == "") {
		return nil, errors.New("testdovecot: TLSCert and TLSKey must be set together")
	}
	if cfg.MaxConnections <= 0 {
		cfg.MaxConnections = 2500
	}
	cfg.Users = maps.Clone(cfg.Users)
	for _, p := range []*string{&cfg.Dir, &cfg.TLSCert, &cfg.TLSKey} {
		if *p != "" {
			if *p, err = filepath.Abs(*p); err != nil {
				return nil, fmt.Errorf("testdovecot: %w", err)
			}
		}
	}

	d := &Instance{cfg: cfg, bin: bin}
	if err := d.firstStart(); err != nil {
		_ = d.removeDir()
		return nil, fmt.Errorf("testdovecot: %w", err)
	}
	return d, nil
}

// firstStart prepares Dir and starts Dovecot, on new ports while a chosen
// one turns out to be taken.
func (d *Instance) firstStart() error {
	const startAttempts = 3
	if err := d.prepare(); err != nil {
		return err
	}
	for attempt := 1; ; attempt++ {
		err := d.configure()
		if err == nil {
			err = d.start()
		}
		if !errors.Is(err, errAddrInUse) || attempt == startAttempts {
			return err
		}
	}
}

// findDovecot returns /usr/sbin/dovecot, else dovecot in PATH.
func findDovecot() (string, error) {
	const debianPath = "/usr/sbin/dovecot"
	if fi, err := os.Stat(debianPath); err == nil && !fi.IsDir() {
		return debianPath, nil
	}
	if p, err := exec.LookPath("dovecot"); err == nil {
		return p, nil
	}
	return "", ErrNotFound
}

// Addr returns the plain POP3 address, "127.0.0.1:port". STLS is offered
// there when TLS is configured.
func (d *Instance) Addr() string { return loopback(d.ports.Plain) }

// TLSAddr returns the implicit-TLS (pop3s) address, or "" without TLS.
func (d *Instance) TLSAddr() string { return loopback(d.ports.TLS) }

// HAProxyAddr returns the address of the listener that expects a PROXY
// protocol header first, or "" without Config.HAProxy. It is ready when
// Start returns.
func (d *Instance) HAProxyAddr() string { return loopback(d.ports.HAProxy) }

// Pid returns the process id of Dovecot's master, which is also the id of
// the process group of all Dovecot's processes. It changes with Restart.
func (d *Instance) Pid() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.pgid
}

// Close stops the instance like Stop, then removes Dir if Start made it.
func (d *Instance) Close() error { return errors.Join(d.Stop(), d.removeDir()) }

func (d *Instance) removeDir() error {
	if !d.ownDir {
		return nil
	}
	return os.RemoveAll(d.cfg.Dir)
}

func (d *Instance) logPath() string { return filepath.Join(d.cfg.Dir, "dovecot.log") }

// logSince returns the log from byte offset off.
func (d *Instance) logSince(off int64) string {
	f, err := os.Open(d.logPath())
	if err != nil {
		return ""
	}
	defer f.Close()
	b, _ := io.ReadAll(io.NewSectionReader(f, off, math.MaxInt64-off))
	return string(b)
}

// logPoll is how often WaitLog and Start read the log again.
const logPoll = 10 * time.Millisecond

// WaitLog waits up to timeout for a line of Dovecot's log that contains
// every one of substrs, and returns the first such line, without its
// newline. Dovecot writes through its log process, so the line about a
// login may appear a moment after the client got +OK. On timeout the error
// quotes the end of the log.
//
// Login lines look like this (rip is the client as Dovecot saw it, after
// any PROXY header or XCLIENT):
//
//	... pop3-login: Info: Login: user=<alice>, method=PLAIN, rip=192.0.2.7, lip=127.0.0.1, mpid=4242, secured, session=<a1b2c3>
func (d *Instance) WaitLog(timeout time.Duration, substrs ...string) (string, error) {
	deadline := time.Now().Add(timeout)
	for {
		log := d.logSince(0)
		for line := range strings.Lines(log) {
			// Only whole lines: the last one may still be being written.
			if line, ok := strings.CutSuffix(line, "\n"); ok && containsAll(line, substrs) {
				return line, nil
			}
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("testdovecot: no log line with %q within %v; log ends:\n%s", substrs, timeout, testproc.LastLines(log, 15))
		}
		time.Sleep(logPoll)
	}
}

func containsAll(s string, substrs []string) bool {
	for _, sub := range substrs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

// ports are an instance's listening ports; 0 for a listener it does not have.
type ports struct{ Plain, TLS, HAProxy int }

// loopback returns the address of port on 127.0.0.1, or "" for port 0.
func loopback(port int) string {
	if port == 0 {
		return ""
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
}
