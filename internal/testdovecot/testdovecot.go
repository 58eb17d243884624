// Package testdovecot starts a private Dovecot POP3 server on loopback, for
// integration tests and benchmarks that need a real upstream.
//
// Each instance has its own folder (config, passwd-file, maildirs, logs,
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
// Messages are served in the order AddMessage added them (see AddMessage).
package testdovecot

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"text/template"
	"time"

	"github.com/popproxy/popproxy/internal/testproc"
)

// ErrNotFound is returned by Start when no dovecot binary is found.
var ErrNotFound = errors.New("dovecot not found: install it with `apt-get install -y dovecot-pop3d` (or run go test -short to skip integration tests)")

// errAddrInUse marks a start that failed because a chosen port was taken
// between choosing it and Dovecot binding it; Start then retries.
var errAddrInUse = errors.New("address already in use")

//go:embed dovecot.conf.tmpl
var confText string

var confTemplate = template.Must(template.New("dovecot.conf").Parse(confText))

const (
	// defaultMaxConnections is enough for load tests of ~2,500 sessions.
	defaultMaxConnections = 2500
	// startAttempts bounds retries when a chosen port was taken meanwhile.
	startAttempts = 3
	// readyTimeout bounds the wait for the first +OK greeting.
	readyTimeout = 15 * time.Second
	// stopTimeout bounds the wait for the processes to exit after
	// SIGTERM, and again after SIGKILL.
	stopTimeout = 10 * time.Second
	// masterAloneGrace is how long Stop lets Dovecot's master and its
	// helper processes linger once no pop3 or pop3-login process is
	// left.
	masterAloneGrace = 100 * time.Millisecond
	// firstUIDLTime is the timestamp of the first message's file name;
	// each later message gets the next second.
	firstUIDLTime = 1700000000
	// maxBaseDir keeps base_dir short: Dovecot's unix sockets live there
	// and a socket path is limited to 108 bytes.
	maxBaseDir = 60
)

// Config describes an instance. Zero values get defaults.
type Config struct {
	// Dir is the working folder. It is created if needed and made mode
	// 0755, because Dovecot's unprivileged users must traverse it; its
	// parent folders must be traversable too (t.TempDir's are not). If
	// empty, Start makes one under os.TempDir, and Close removes it.
	Dir string

	// Users maps user names to passwords, stored with the PLAIN scheme in
	// a passwd-file. Each user gets an empty Maildir. Names may not
	// contain ':', '/', whitespace or control characters, nor start with
	// '.'; passwords may not contain ':' or control characters.
	Users map[string]string

	// TLSCert and TLSKey are paths to PEM files. When both are set,
	// ssl = yes: a pop3s listener (implicit TLS) is started too, see
	// TLSAddr, and STLS is offered on the plain port. If empty, TLS is
	// off.
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
	// (login_trusted_networks), Start's readiness check included. Observed
	// with Dovecot 2.3.19: they are greeted "+OK [XCLIENT] Dovecot (Debian)
	// ready." and may send "XCLIENT ADDR=<ip> PORT=<port> SESSION=<id>
	// TTL=<n>" before logging in; the session is then logged as coming from
	// ADDR with SESSION as its id (rip= and session=<...>, see WaitLog).
	// Without it, the greeting has no [XCLIENT] and XCLIENT is answered
	// "+OK You are not from trusted IP - ignoring": +OK, so only the
	// greeting tells whether XCLIENT works.
	LoginTrusted bool

	// OAuth2IntrospectionURL, if set, offers SASL OAUTHBEARER and XOAUTH2
	// too, checked by an oauth2 passdb: every token is POSTed to this URL
	// (RFC 7662 token introspection, force_introspection = yes, no
	// caching) as token=..., and a login succeeds when the answer is JSON
	// with "active": true and "username" the user logging in. Such a user
	// still needs an entry in Users, for the mailbox (userdb). Password
	// logins are unchanged.
	OAuth2IntrospectionURL string
}

// Instance is a running private Dovecot. Its methods are safe for
// concurrent use.
type Instance struct {
	dir      string
	ownDir   bool   // Start made dir; Close removes it
	baseDir  string // Dovecot's base_dir (sockets, master.pid)
	ownBase  bool   // baseDir is outside dir; Close removes it
	mailRoot string
	logPath  string
	addr     string
	tlsAddr  string
	haAddr   string // the haproxy listener, if any
	users    map[string]string
	uid, gid int // owner of the maildirs and of the mail processes
	seq      atomic.Int64
	bin      string // for Restart
	cfg      Config
	ports    ports

	pgid int
	done chan struct{} // closed when cmd.Wait has returned

	mu      sync.Mutex
	stopped bool
	stopErr error
	closed  bool
}

// Start writes the configuration, passwd-file and maildirs, starts
// `dovecot -F -c <Dir>/dovecot.conf` in its own process group with stdin
// from /dev/null and stdout and stderr appended to LogPath, and returns
// once the plain POP3 port answers with a +OK greeting. Ports are chosen
// free on 127.0.0.1; if one is taken before Dovecot binds it, Start tries
// again with new ports, up to 3 times.
//
// Side effect: from the first Start on, child processes of this program
// inherit its raised open-file limit; see inheritFileLimit.
//
// If Start returns an error, no process is left running. Call Stop (or
// Close) when done with the instance.
func Start(cfg Config) (*Instance, error) {
	bin, err := findDovecot()
	if err != nil {
		return nil, err
	}
	for name, pass := range cfg.Users {
		if err := checkUser(name, pass); err != nil {
			return nil, err
		}
	}
	if cfg.MaxConnections <= 0 {
		cfg.MaxConnections = defaultMaxConnections
	}
	if (cfg.TLSCert == "") != (cfg.TLSKey == "") {
		return nil, errors.New("testdovecot: TLSCert and TLSKey must be set together")
	}
	d := &Instance{bin: bin, cfg: cfg, users: make(map[string]string, len(cfg.Users))}
	for name, pass := range cfg.Users {
		d.users[name] = pass
	}
	if err := d.prepare(cfg); err != nil {
		d.removeDirs()
		return nil, err
	}
	for attempt := 1; ; attempt++ {
		if d.ports, err = choosePorts(cfg); err != nil {
			d.removeDirs()
			return nil, err
		}
		d.setAddrs()
		err = d.start()
		if err == nil {
			return d, nil
		}
		if !errors.Is(err, errAddrInUse) || attempt == startAttempts {
			d.removeDirs()
			return nil, err
		}
	}
}

// findDovecot returns the path of the dovecot binary: /usr/sbin/dovecot,
// else dovecot in PATH.
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

// checkUser rejects names and passwords that would break the passwd-file
// or the maildir path (%u in mail_location).
func checkUser(name, pass string) error {
	if name == "" || strings.HasPrefix(name, ".") ||
		strings.ContainsAny(name, ":/\\") || strings.IndexFunc(name, isSpaceOrControl) >= 0 {
		return fmt.Errorf("testdovecot: invalid user name %q", name)
	}
	if strings.Contains(pass, ":") || strings.IndexFunc(pass, isControl) >= 0 {
		return fmt.Errorf("testdovecot: invalid password for user %q", name)
	}
	return nil
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

func isSpaceOrControl(r rune) bool { return r == ' ' || isControl(r) }

// prepare makes the folders and writes everything that does not depend on
// the ports: passwd-file and maildirs.
func (d *Instance) prepare(cfg Config) error {
	if cfg.Dir == "" {
		dir, err := os.MkdirTemp("", "popdc")
		if err != nil {
			return fmt.Errorf("testdovecot: %w", err)
		}
		d.dir, d.ownDir = dir, true
	} else {
		dir, err := filepath.Abs(cfg.Dir)
		if err != nil {
			return fmt.Errorf("testdovecot: %w", err)
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("testdovecot: %w", err)
		}
		d.dir = dir
	}
	// Dovecot's login and auth processes run as other users and must
	// traverse the folder; MkdirTemp makes 0700.
	if err := os.Chmod(d.dir, 0o755); err != nil {
		return fmt.Errorf("testdovecot: %w", err)
	}

	d.baseDir = filepath.Join(d.dir, "run")
	if len(d.baseDir) > maxBaseDir {
		base, err := os.MkdirTemp("", "popdc-run")
		if err != nil {
			return fmt.Errorf("testdovecot: %w", err)
		}
		d.baseDir, d.ownBase = base, true
	}
	d.mailRoot = filepath.Join(d.dir, "mail")
	d.logPath = filepath.Join(d.dir, "dovecot.log")
	for _, p := range []string{d.baseDir, filepath.Join(d.dir, "state"), d.mailRoot} {
		if err := os.MkdirAll(p, 0o755); err != nil {
			return fmt.Errorf("testdovecot: %w", err)
		}
		if err := os.Chmod(p, 0o755); err != nil {
			return fmt.Errorf("testdovecot: %w", err)
		}
	}

	var err error
	d.uid, d.gid, err = mailIdentity()
	if err != nil {
		return err
	}

	names := make([]string, 0, len(d.users))
	for name := range d.users {
		names = append(names, name)
	}
	sort.Strings(names)
	var users bytes.Buffer
	for _, name := range names {
		home := filepath.Join(d.mailRoot, name)
		// passwd-file: user:password:uid:gid:(gecos):home:(shell):extra
		fmt.Fprintf(&users, "%s:{PLAIN}%s:%d:%d::%s::\n", name, d.users[name], d.uid, d.gid, home)
		for _, sub := range []string{"", "Maildir", "Maildir/cur", "Maildir/new", "Maildir/tmp"} {
			p := filepath.Join(home, sub)
			if err := os.MkdirAll(p, 0o700); err != nil {
				return fmt.Errorf("testdovecot: %w", err)
			}
			if err := d.chown(p); err != nil {
				return err
			}
		}
	}
	// Readable by Dovecot's auth processes, which do not run as root.
	if err := os.WriteFile(filepath.Join(d.dir, "users"), users.Bytes(), 0o644); err != nil {
		return fmt.Errorf("testdovecot: %w", err)
	}
	if cfg.OAuth2IntrospectionURL != "" {
		return d.writeOAuth2Config(cfg.OAuth2IntrospectionURL)
	}
	return nil
}

// writeOAuth2Config writes the oauth2 passdb's settings (Dovecot 2.3's
// dovecot-oauth2.conf.ext).
func (d *Instance) writeOAuth2Config(url string) error {
	if strings.ContainsAny(url, " \r\n\"") {
		return fmt.Errorf("testdovecot: OAuth2IntrospectionURL %q holds a space, a quote or a line break", url)
	}
	conf := "introspection_mode = post\n" +
		"introspection_url = " + url + "\n" +
		"force_introspection = yes\n" +
		"username_attribute = username\n" +
		"active_attribute = active\n" +
		"active_value = true\n"
	if err := os.WriteFile(d.oauth2Path(), []byte(conf), 0o644); err != nil {
		return fmt.Errorf("testdovecot: %w", err)
	}
	return nil
}

func (d *Instance) oauth2Path() string { return filepath.Join(d.dir, "dovecot-oauth2.conf.ext") }

// mailIdentity returns the uid and gid the mail processes run as and own
// the maildirs. Dovecot refuses uid 0 for mail, so when running as root
// it is the unprivileged user nobody (else dovecot); otherwise Dovecot
// cannot change user and everything is the calling user.
func mailIdentity() (uid, gid int, err error) {
	if os.Geteuid() != 0 {
		return os.Geteuid(), os.Getegid(), nil
	}
	for _, name := range []string{"nobody", "dovecot"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		uid, err1 := strconv.Atoi(u.Uid)
		gid, err2 := strconv.Atoi(u.Gid)
		if err1 == nil && err2 == nil && uid != 0 {
			return uid, gid, nil
		}
	}
	return 0, 0, errors.New("testdovecot: running as root, but neither user nobody nor dovecot exists to own the mail")
}

// chown gives p to the mail user; a no-op when not running as root.
func (d *Instance) chown(p string) error {
	if os.Geteuid() != 0 {
		return nil
	}
	if err := os.Lchown(p, d.uid, d.gid); err != nil {
		return fmt.Errorf("testdovecot: %w", err)
	}
	return nil
}

// confData fills dovecot.conf.tmpl.
type confData struct {
	InstanceName   string
	BaseDir        string
	StateDir       string
	LogPath        string
	NonRoot        bool
	UserName       string
	GroupName      string
	UID, GID       int
	UsersFile      string
	MailRoot       string
	TLS            bool
	TLSCert        string
	TLSKey         string
	Port, TLSPort  int
	HAProxyPort    int
	LoginTrusted   bool
	OAuth2Config   string // the oauth2 passdb's file, if OAuth is offered
	ProcessLimit   int
	ClientLimit    int
	LoginProcesses int
}

// ports are an instance's listening ports; 0 for a listener it does not have.
type ports struct{ plain, tls, haproxy int }

// choosePorts picks free ports for the listeners cfg asks for.
func choosePorts(cfg Config) (ports, error) {
	var p ports
	var err error
	if p.plain, err = testproc.FreePort(); err != nil {
		return p, err
	}
	if cfg.TLSCert != "" {
		if p.tls, err = testproc.FreePort(); err != nil {
			return p, err
		}
	}
	if cfg.HAProxy {
		if p.haproxy, err = testproc.FreePort(); err != nil {
			return p, err
		}
	}
	return p, nil
}

// setAddrs sets the addresses of d.ports, which Restart keeps.
func (d *Instance) setAddrs() {
	addr := func(port int) string {
		if port == 0 {
			return ""
		}
		return net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	}
	d.addr, d.tlsAddr, d.haAddr = addr(d.ports.plain), addr(d.ports.tls), addr(d.ports.haproxy)
}

// start writes the config for d.ports and runs Dovecot until it greets. It
// returns an error wrapping errAddrInUse if a port was taken.
func (d *Instance) start() error {
	cfg, bin := d.cfg, d.bin
	port, tlsPort, haPort := d.ports.plain, d.ports.tls, d.ports.haproxy
	data := confData{
		InstanceName: "popdc-" + filepath.Base(d.dir),
		BaseDir:      d.baseDir,
		StateDir:     filepath.Join(d.dir, "state"),
		LogPath:      d.logPath,
		UID:          d.uid,
		GID:          d.gid,
		UsersFile:    filepath.Join(d.dir, "users"),
		MailRoot:     d.mailRoot,
		Port:         port,
		TLSPort:      tlsPort,
		HAProxyPort:  haPort,
		LoginTrusted: cfg.LoginTrusted,
		// One pop3 process per session, plus some slack.
		ProcessLimit: cfg.MaxConnections + 100,
		// Each session is a client of pop3-login, anvil, log, ...
		ClientLimit:    2*cfg.MaxConnections + 100,
		LoginProcesses: min(runtime.NumCPU(), 4),
	}
	if os.Geteuid() != 0 {
		u, err := user.Current()
		if err != nil {
			return fmt.Errorf("testdovecot: %w", err)
		}
		g, err := user.LookupGroupId(strconv.Itoa(os.Getegid()))
		if err != nil {
			return fmt.Errorf("testdovecot: %w", err)
		}
		data.NonRoot, data.UserName, data.GroupName = true, u.Username, g.Name
	}
	if cfg.OAuth2IntrospectionURL != "" {
		data.OAuth2Config = d.oauth2Path()
	}
	var err error
	if cfg.TLSCert != "" {
		data.TLS = true
		if data.TLSCert, err = filepath.Abs(cfg.TLSCert); err != nil {
			return fmt.Errorf("testdovecot: %w", err)
		}
		if data.TLSKey, err = filepath.Abs(cfg.TLSKey); err != nil {
			return fmt.Errorf("testdovecot: %w", err)
		}
	}
	var conf bytes.Buffer
	if err := confTemplate.Execute(&conf, data); err != nil {
		return fmt.Errorf("testdovecot: %w", err)
	}
	confPath := filepath.Join(d.dir, "dovecot.conf")
	if err := os.WriteFile(confPath, conf.Bytes(), 0o644); err != nil {
		return fmt.Errorf("testdovecot: %w", err)
	}

	// Dovecot's master keeps its stdout and stderr open, and passes them
	// on: they must be a file, not a pipe, or whoever reads the pipe (the
	// test runner) waits forever. exec.Cmd gives Stdin nil /dev/null.
	logFile, err := os.OpenFile(d.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("testdovecot: %w", err)
	}
	defer logFile.Close()
	logStart, err := logFile.Seek(0, io.SeekEnd)
	if err != nil {
		return fmt.Errorf("testdovecot: %w", err)
	}

	inheritFileLimit()
	cmd := exec.Command(bin, "-F", "-c", confPath)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.Dir = d.dir
	// Own process group, so that Kill reaches every Dovecot process.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// Dovecot's master stops its children when it gets the signal.
	testproc.SetParentDeathSignal(cmd.SysProcAttr)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("testdovecot: start %s: %w", bin, err)
	}
	d.pgid = cmd.Process.Pid
	d.done = make(chan struct{})
	go waitProcess(cmd, d.done)

	if err := d.waitReady(); err != nil {
		_ = d.terminate(syscall.SIGKILL) // the start error says more
		log := d.logSince(logStart)
		if strings.Contains(log, "Address already in use") {
			return fmt.Errorf("testdovecot: %w: %s", errAddrInUse, testproc.LastLines(log, 5))
		}
		return fmt.Errorf("testdovecot: %w; dovecot log:\n%s", err, testproc.LastLines(log, 20))
	}
	if err := d.waitLoginLog(logStart); err != nil {
		_ = d.terminate(syscall.SIGKILL)
		return fmt.Errorf("testdovecot: %w; dovecot log:\n%s", err, testproc.LastLines(d.logSince(logStart), 20))
	}
	return nil
}

// waitLoginLog waits until a line from pop3-login (the readiness check's
// "Disconnected: Aborted login ...") has reached the log, greeting again
// every pokeInterval while none has.
//
// Seen with Dovecot 2.3.19 when the machine is busy (go test -race, many
// instances): if a login process logs before Dovecot's log process has
// first read that service's pipe, the log process reads the line together
// with the master's handshake, and then waits for new input before it
// writes what it already holds. The readiness line, a "Login: ... rip="
// line after it, and so on then stay unwritten until pop3-login next logs,
// which in a test may be never. Once one line has come through, later
// ones follow at once, so Start makes sure of that one. (The pop3 service,
// whose first line comes when the first session ends, is not affected in
// practice.)
func (d *Instance) waitLoginLog(logStart int64) error {
	deadline := time.Now().Add(readyTimeout)
	lastPoke := time.Now()
	for !strings.Contains(d.logSince(logStart), "pop3-login: ") {
		if time.Now().After(deadline) {
			return fmt.Errorf("no pop3-login line in the log within %v", readyTimeout)
		}
		if time.Since(lastPoke) >= pokeInterval {
			_ = testproc.Greets(d.addr) // one more line, which pushes the others out
			lastPoke = time.Now()
		}
		time.Sleep(logPoll)
	}
	return nil
}

var fileLimitOnce sync.Once

// inheritFileLimit lets child processes, Dovecot among them, inherit the
// open-file limit the Go runtime raised for this process at start (soft =
// hard). Go otherwise gives children the original soft limit, often 1024,
// and Dovecot's log and anvil processes need one descriptor per session
// ("fd limit (ulimit -n) is lower than required under max. load"). It is
// process-wide, and harmless: it only affects programs that still use
// select(2).
func inheritFileLimit() {
	fileLimitOnce.Do(func() {
		var lim syscall.Rlimit
		if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil {
			// Setrlimit with RLIMIT_NOFILE, even unchanged, tells
			// os/exec to stop restoring the original soft limit.
			_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
		}
	})
}

// waitProcess reaps Dovecot's master and closes done.
func waitProcess(cmd *exec.Cmd, done chan<- struct{}) {
	_ = cmd.Wait() // exit status after our own signal is not interesting
	close(done)
}

// waitReady polls the plain port until it answers with +OK, Dovecot
// exits, or readyTimeout passes.
func (d *Instance) waitReady() error {
	deadline := time.Now().Add(readyTimeout)
	for {
		select {
		case <-d.done:
			return errors.New("dovecot exited during start")
		default:
		}
		err := testproc.Greets(d.addr)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no POP3 greeting on %s within %v: %w", d.addr, readyTimeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Greeted polls the plain port every 10 ms until Dovecot greets with +OK,
// and returns when it did: once it is stopped or paused, the moment it
// serves again after Restart or Resume. A connection made while Dovecot is
// paused waits for its greeting. If done is closed first, Greeted returns
// the zero time.
func (d *Instance) Greeted(done <-chan struct{}) time.Time {
	for {
		if t, err := testproc.GreetedAt(d.addr); err == nil {
			return t
		}
		select {
		case <-done:
			return time.Time{}
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Addr returns the plain POP3 address, "127.0.0.1:port". STLS is offered
// there when TLS is configured.
func (d *Instance) Addr() string { return d.addr }

// TLSAddr returns the implicit-TLS (pop3s) address, or "" if Config had no
// certificate.
func (d *Instance) TLSAddr() string { return d.tlsAddr }

// HAProxyAddr returns the address of the listener that expects a PROXY
// protocol header first, "127.0.0.1:port", or "" without Config.HAProxy. Dovecot opens it with the plain port, so it is ready when
// Start returns.
func (d *Instance) HAProxyAddr() string { return d.haAddr }

// LogPath returns Dovecot's log file; Dovecot's stdout and stderr are
// appended to it too. With auth_verbose on, failed logins are logged.
func (d *Instance) LogPath() string { return d.logPath }

// Dir returns the instance's working folder.
func (d *Instance) Dir() string { return d.dir }

// Pid returns the process id of Dovecot's master, which is also the id of
// the process group of all Dovecot's processes. It changes with Restart.
func (d *Instance) Pid() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.pgid
}

// Stop sends SIGTERM to every process of the instance (its process group,
// led by Dovecot's master) and waits until none is left. A logged-in
// session gets "-ERR [SYS/TEMP] Server shutting down." and commits no DELE.
//
// Signalling only the master would not do: the pop3 processes of logged-in
// sessions outlive Dovecot 2.3's master. The master itself often lingers a
// second after its children, and now and then its anvil process stays
// blocked for five seconds after SIGTERM (seen with 2.3.19). So once no
// pop3 or pop3-login process is left for 100 ms, Stop sends SIGKILL to the
// rest; anything still there after 10 s gets SIGKILL too. Log lines written
// while Dovecot shuts down may be lost.
//
// Stop and Kill act once: later calls return the first call's result until
// Restart. Stop keeps Dir.
func (d *Instance) Stop() error { return d.halt(syscall.SIGTERM) }

// Kill sends SIGKILL to every process of the instance at once, as if the
// server crashed, and waits until they are gone. Connections are reset.
func (d *Instance) Kill() error { return d.halt(syscall.SIGKILL) }

func (d *Instance) halt(sig syscall.Signal) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.stopped {
		d.stopped = true
		d.stopErr = d.terminate(sig)
	}
	return d.stopErr
}

// terminate sends sig to the process group and waits until it is gone,
// sending SIGKILL if it is not within stopTimeout.
func (d *Instance) terminate(sig syscall.Signal) error {
	_ = syscall.Kill(-d.pgid, sig)             // ESRCH: gone already
	_ = syscall.Kill(-d.pgid, syscall.SIGCONT) // a paused instance must see SIGTERM
	if d.waitGone() {
		return nil
	}
	_ = syscall.Kill(-d.pgid, syscall.SIGKILL)
	if !d.waitGone() {
		return fmt.Errorf("testdovecot: processes of group %d still running %v after SIGKILL", d.pgid, stopTimeout)
	}
	return fmt.Errorf("testdovecot: dovecot still running %v after %v; killed", stopTimeout, sig)
}

// waitGone waits up to stopTimeout until the master has been reaped and no
// process of its group is left, sending SIGKILL once only the master and
// its helpers (anvil, log, auth, ...) have been left for masterAloneGrace.
func (d *Instance) waitGone() bool {
	deadline := time.Now().Add(stopTimeout)
	var alone time.Time // when no serving process was first seen
	for {
		select {
		case <-d.done:
			if !testproc.GroupAlive(d.pgid) {
				return true
			}
		default:
		}
		if procs, ok := testproc.Group(d.pgid); ok && !slices.ContainsFunc(procs, serving) {
			if alone.IsZero() {
				alone = time.Now()
			} else if time.Since(alone) > masterAloneGrace {
				_ = syscall.Kill(-d.pgid, syscall.SIGKILL)
			}
		} else {
			alone = time.Time{}
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// restartTimeout bounds Restart's retries while a port is taken.
const restartTimeout = 10 * time.Second

// Restart starts Dovecot again after Stop or Kill, on the same ports, with
// the same configuration and the mail as it is now, and returns once it
// greets. A port may be taken meanwhile, most likely as the local port of
// an outgoing connection; Restart then tries again for up to 10 s.
func (d *Instance) Restart() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case d.closed:
		return errors.New("testdovecot: restart: the instance is closed")
	case !d.stopped:
		return errors.New("testdovecot: restart: still running; Stop or Kill it first")
	}
	// A master killed while it updated its list of instances leaves this
	// lock behind, and the next one waits 10 s for it to go stale (seen
	// with 2.3.19: "file_dotlock_open(.../state/instances) failed").
	if err := os.Remove(filepath.Join(d.dir, "state", "instances.lock")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("testdovecot: restart: %w", err)
	}
	deadline := time.Now().Add(restartTimeout)
	for {
		err := d.start()
		if err == nil {
			d.stopped, d.stopErr = false, nil
			return nil
		}
		if !errors.Is(err, errAddrInUse) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Pause sends SIGSTOP to every process of the instance, as if the server
// hung: the kernel still accepts connections on its ports, but nothing is
// answered until Resume. Stop and Kill work on a paused instance.
func (d *Instance) Pause() error { return d.signal(syscall.SIGSTOP) }

// Resume sends SIGCONT to every process of a paused instance.
func (d *Instance) Resume() error { return d.signal(syscall.SIGCONT) }

// signal sends sig to the running instance's process group.
func (d *Instance) signal(sig syscall.Signal) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stopped {
		return fmt.Errorf("testdovecot: %v: the instance is stopped", sig)
	}
	if err := syscall.Kill(-d.pgid, sig); err != nil {
		return fmt.Errorf("testdovecot: %v: %w", sig, err)
	}
	return nil
}

// Close stops the instance like Stop, then removes Dir if Start made it.
func (d *Instance) Close() error {
	return errors.Join(d.Stop(), d.remove())
}

// remove removes the folders Start made, once.
func (d *Instance) remove() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	d.closed = true
	return d.removeDirs()
}

// removeDirs removes the folders Start made.
func (d *Instance) removeDirs() error {
	var errs []error
	if d.ownBase {
		errs = append(errs, os.RemoveAll(d.baseDir))
	}
	if d.ownDir {
		errs = append(errs, os.RemoveAll(d.dir))
	}
	return errors.Join(errs...)
}

// serving reports whether p serves clients: a login or a mail process.
func serving(p testproc.Proc) bool { return p.Comm == "pop3" || p.Comm == "pop3-login" }

// logSince returns the log from byte offset off.
func (d *Instance) logSince(off int64) string {
	f, err := os.Open(d.logPath)
	if err != nil {
		return ""
	}
	defer f.Close()
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return ""
	}
	b, _ := io.ReadAll(f)
	return string(b)
}

const (
	// logPoll is how often WaitLog and Start read the log again.
	logPoll = 10 * time.Millisecond
	// pokeInterval is how long Start waits for a login line to reach
	// the log before it connects again; see waitLoginLog.
	pokeInterval = 100 * time.Millisecond
)

// WaitLog waits up to timeout for a line of the log (LogPath) that
// contains every one of substrs, and returns the first such line, without
// its newline. Dovecot writes through its log process, so the line about
// a login may appear a moment after the client got +OK. On timeout the
// error quotes the end of the log.
//
// Login lines look like this (Dovecot 2.3.19, login_log_format_elements as
// set by this package; rip is the client as Dovecot saw it, after any
// PROXY header or XCLIENT):
//
//	... pop3-login: Info: Login: user=<alice>, method=PLAIN, rip=192.0.2.7, lip=127.0.0.1, mpid=4242, secured, session=<a1b2c3>
func (d *Instance) WaitLog(timeout time.Duration, substrs ...string) (string, error) {
	deadline := time.Now().Add(timeout)
	for {
		log := d.logSince(0)
		// Only whole lines: the last one may still be being written.
		whole, _ := strings.CutSuffix(log[:strings.LastIndexByte(log, '\n')+1], "\n")
		for _, line := range strings.Split(whole, "\n") {
			if containsAll(line, substrs) {
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

// AddMessage stores msg, exactly as given, as a new message of user and
// returns its UIDL. The UIDL is the maildir file name (pop3_uidl_format =
// %f), "<seconds>.M<n>P<pid>.popproxy", unique within the instance. It may
// be called while Dovecot runs; the message is written to Maildir/tmp and
// renamed into Maildir/new, so Dovecot never sees it half written.
//
// Messages are served in the order they were added: Dovecot gives the
// messages it finds new UIDs in the order of the number at the start of
// their file names (the delivery time in seconds; Dovecot 2.3 compares
// only that number, so equal numbers would come in any order), and POP3
// lists messages by UID. Each message therefore gets its own second,
// counting up from 1700000000, and the names also sort as strings in the
// same order.
func (d *Instance) AddMessage(user string, msg []byte) (uidl string, err error) {
	if _, ok := d.users[user]; !ok {
		return "", fmt.Errorf("testdovecot: no user %q", user)
	}
	n := d.seq.Add(1)
	name := fmt.Sprintf("%d.M%dP%d.popproxy", firstUIDLTime+n, n, os.Getpid())
	maildir := filepath.Join(d.mailRoot, user, "Maildir")
	tmp := filepath.Join(maildir, "tmp", name)
	if err := os.WriteFile(tmp, msg, 0o600); err != nil {
		return "", fmt.Errorf("testdovecot: add message: %w", err)
	}
	if err := d.chown(tmp); err != nil {
		os.Remove(tmp)
		return "", err
	}
	if err := os.Rename(tmp, filepath.Join(maildir, "new", name)); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("testdovecot: add message: %w", err)
	}
	return name, nil
}

// Messages returns the UIDLs (maildir file names without the ":2,flags"
// part) of the messages now in user's Maildir, new and cur, in the order
// they were added. A message deleted by DELE is gone only once the POP3
// session has ended with QUIT.
func (d *Instance) Messages(user string) ([]string, error) {
	if _, ok := d.users[user]; !ok {
		return nil, fmt.Errorf("testdovecot: no user %q", user)
	}
	maildir := filepath.Join(d.mailRoot, user, "Maildir")
	var names []string
	for _, sub := range []string{"new", "cur"} {
		entries, err := os.ReadDir(filepath.Join(maildir, sub))
		if err != nil {
			return nil, fmt.Errorf("testdovecot: messages: %w", err)
		}
		for _, e := range entries {
			name := e.Name()
			if strings.HasPrefix(name, ".") || e.IsDir() {
				continue
			}
			if i := strings.IndexByte(name, ':'); i >= 0 {
				name = name[:i]
			}
			names = append(names, name)
		}
	}
	sort.Strings(names)
	return names, nil
}

// New starts an instance for a test and registers its Close on
// t.Cleanup; on failure it calls t.Fatal. With go test -short it skips the
// test instead. If no dovecot binary is found, the test fails with a
// message that says how to install it.
//
// If the test has failed, the end of Dovecot's log is written to the test
// log before the instance's folder is removed.
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
			t.Logf("dovecot log %s (end):\n%s", d.LogPath(), testproc.LastLines(d.logSince(0), 30))
		}
		if err := d.remove(); err != nil {
			t.Errorf("remove dovecot folder: %v", err)
		}
	})
	return d
}
