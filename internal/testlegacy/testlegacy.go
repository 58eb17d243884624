// Package testlegacy runs legacy POP3 servers from Debian 12 privately on
// loopback, for tests that need an upstream other than Dovecot: popa3d 1.0.3
// and solid-pop3d 0.15, each inetd-style under socat
// (TCP-LISTEN:port,bind=127.0.0.1,fork EXEC:server,nofork), one server
// process per connection.
//
// .ci/install-test-tools unpacks both packages into /opt/popproxy-test/legacy
// (they conflict with dovecot-pop3d, so they are not installed) and creates
// the accounts they need. A test that cannot find them fails and says so;
// only go test -short skips it.
//
// Typical usage in a test:
//
//	srv := testlegacy.StartPopa3d(t)
//	if err := srv.AddMessage([]byte("Subject: hi\r\n\r\nhello\r\n")); err != nil { ... }
//	c, err := net.Dial("tcp", srv.Addr())
//	// USER srv.User(), PASS srv.Password(), ...
//
// # Users and mailboxes
//
// Both servers check passwords of system accounts through PAM (the "other"
// service, as no /etc/pam.d file of theirs is installed: pam_unix against
// /etc/shadow), so they must run as root, change to the mailbox owner, and
// wait about 2 s before refusing a wrong password (pam_unix's delay). The
// mailbox owners are a small pool of system users, popproxy-legacy1 and
// popproxy-legacy2, without shell and with a random password that only
// root can read, in /opt/popproxy-test/legacy/<user>.password. An instance
// takes a free user for its lifetime by locking that file (flock), so tests
// in any number of processes never share a mailbox; when all are taken, a
// start waits for one.
//
// popa3d reads /var/mail/<user>, a path compiled in. solid-pop3d gets its
// own configuration (-f), which puts the mailbox in the instance's private
// folder. Both mailboxes are mbox files, empty at start.
//
// # What the servers do (seen with the Debian 12 packages)
//
//   - popa3d: greeting "+OK" with no text; no CAPA, AUTH, STLS or APOP; "+OK"
//     with no size to RETR; UIDL and TOP work; bare "-ERR" to anything it
//     refuses after login, and to a correct PASS when the mailbox cannot be
//     read; "-ERR Authentication failed (bad password?)" to a wrong password,
//     after which it closes the connection.
//   - solid-pop3d: greeting "+OK Solid POP3 server ready <pid.time@host>"
//     (an APOP timestamp), and APOP for users with a secret in ~/.spop3d
//     (see APOPSecret); no CAPA ("-ERR unknown command"); "+OK n octets"
//     to RETR; "-ERR authentication failed" to a wrong password; "-ERR can't
//     open mailbox file" to a correct one when the mailbox cannot be read.
//   - Sizes, in LIST, STAT and RETR, count every line with CRLF before
//     dot-stuffing. solid-pop3d also counts, and sends, the empty line that
//     ends each message in the mbox file (so 2 octets more than popa3d).
package testlegacy

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/popproxy/popproxy/internal/testproc"
)

// Dir is where .ci/install-test-tools unpacks the servers (under root/) and
// keeps the pool users' passwords.
const Dir = "/opt/popproxy-test/legacy"

// poolUsers own the mailboxes; .ci/install-test-tools creates them.
var poolUsers = []string{"popproxy-legacy1", "popproxy-legacy2"}

const (
	// userWait bounds the wait for a free pool user.
	userWait = 2 * time.Minute
	// startAttempts bounds retries when the chosen port was taken meanwhile.
	startAttempts = 3
	// readyTimeout bounds the wait for the first greeting.
	readyTimeout = 15 * time.Second
	// stopTimeout bounds the wait for the processes to go after SIGKILL.
	stopTimeout = 10 * time.Second
	// popa3dSpool is popa3d's mailbox folder, compiled in.
	popa3dSpool = "/var/mail"
)

// Instance is a running legacy server with one user and its mailbox. Add
// messages, or change the mailbox, only while no session is open.
type Instance struct {
	server   string // "popa3d" or "solid-pop3d"
	addr     string
	user     string
	password string
	uid, gid int
	home     string
	mailbox  string // the mbox file
	dir      string // private folder: socat's log, solid-pop3d's configuration and mailbox
	logPath  string
	lock     *os.File // the user's password file, locked while the instance runs
	cmd      *exec.Cmd
	done     chan struct{} // closed once socat has been reaped
}

// StartPopa3d starts popa3d for a test, and stops it and frees its user when
// the test ends. It fails the test if popa3d cannot run.
func StartPopa3d(t testing.TB) *Instance {
	t.Helper()
	return start(t, "popa3d", func(in *Instance) ([]string, error) {
		in.mailbox = filepath.Join(popa3dSpool, in.user)
		return nil, nil
	})
}

// StartSolid starts solid-pop3d for a test, with a configuration of its own,
// and stops it and frees its user when the test ends. It fails the test if
// solid-pop3d cannot run.
func StartSolid(t testing.TB) *Instance {
	t.Helper()
	return start(t, "solid-pop3d", (*Instance).configureSolid)
}

// configureSolid writes solid-pop3d's configuration and returns its
// arguments. The mailbox is in a folder of the user's own: solid-pop3d
// locks it with a .lock file beside it, written as the user.
func (in *Instance) configureSolid() ([]string, error) {
	folder := filepath.Join(in.dir, "mail", in.user)
	if err := os.Mkdir(filepath.Dir(folder), 0o755); err != nil {
		return nil, err
	}
	if err := os.Mkdir(folder, 0o700); err != nil {
		return nil, err
	}
	if err := os.Chown(folder, in.uid, in.gid); err != nil {
		return nil, err
	}
	in.mailbox = filepath.Join(folder, "mbox")
	conf := filepath.Join(in.dir, "spop3d.conf")
	text := fmt.Sprintf(`<Global>
	MailDropName	"%s/mail/%%s/mbox"
	MailDropType	mailbox
	LogStatistics	no
	AddBulletins	no
</Global>
`, in.dir)
	// Read by solid-pop3d's unprivileged part (user spop3d).
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		return nil, err
	}
	return []string{"-f", conf}, nil
}

// start takes a user, prepares the mailbox, runs the server under socat and
// registers the cleanup. configure sets the mailbox path and returns the
// server's arguments.
func start(t testing.TB, server string, configure func(*Instance) ([]string, error)) *Instance {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: needs " + server)
	}
	bin := filepath.Join(Dir, "root/usr/sbin", server)
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("testlegacy: %s not found (%v): run .ci/install-test-tools", server, err)
	}
	socat, err := exec.LookPath("socat")
	if err != nil {
		t.Fatal("testlegacy: socat not found: run .ci/install-test-tools (apt-get install socat)")
	}
	if os.Geteuid() != 0 {
		t.Fatalf("testlegacy: %s must be started as root: it checks system passwords and changes to the mailbox owner", server)
	}
	in := &Instance{server: server}
	t.Cleanup(func() {
		if t.Failed() && in.logPath != "" {
			b, _ := os.ReadFile(in.logPath)
			t.Logf("socat log for %s (end):\n%s", server, testproc.LastLines(string(b), 30))
		}
		if err := in.close(); err != nil {
			t.Errorf("testlegacy: stop %s: %v", server, err)
		}
	})
	if err := in.takeUser(); err != nil {
		t.Fatalf("testlegacy: %v", err)
	}
	if err := in.prepare(); err != nil {
		t.Fatalf("testlegacy: %v", err)
	}
	args, err := configure(in)
	if err == nil {
		err = in.writeMailbox(nil, os.O_TRUNC)
	}
	if err != nil {
		t.Fatalf("testlegacy: %v", err)
	}
	for attempt := 1; ; attempt++ {
		err := in.run(socat, append([]string{bin}, args...))
		if err == nil {
			return in
		}
		if !errors.Is(err, errAddrInUse) || attempt == startAttempts {
			t.Fatalf("testlegacy: start %s: %v", server, err)
		}
	}
}

// takeUser locks the first free pool user's password file, waiting up to
// userWait for one, and reads the user's password and ids.
func (in *Instance) takeUser() error {
	deadline := time.Now().Add(userWait)
	for {
		for _, name := range poolUsers {
			ok, err := in.tryUser(name)
			if err != nil || ok {
				return err
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("all of %v busy for %v", poolUsers, userWait)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// tryUser takes name if no other instance has it.
func (in *Instance) tryUser(name string) (bool, error) {
	f, err := os.Open(filepath.Join(Dir, name+".password"))
	if err != nil {
		return false, fmt.Errorf("pool user %s: %w: run .ci/install-test-tools", name, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return false, nil
		}
		return false, fmt.Errorf("lock pool user %s: %w", name, err)
	}
	in.lock = f
	b, err := os.ReadFile(f.Name())
	if err != nil {
		return true, err
	}
	u, err := user.Lookup(name)
	if err != nil {
		return true, fmt.Errorf("%w: run .ci/install-test-tools", err)
	}
	in.home = u.HomeDir
	in.uid, _ = strconv.Atoi(u.Uid)
	in.gid, _ = strconv.Atoi(u.Gid)
	in.user, in.password = name, strings.TrimSpace(string(b))
	return true, nil
}

// prepare makes the private folder, traversable by the servers'
// unprivileged users (MkdirTemp makes 0700).
func (in *Instance) prepare() error {
	dir, err := os.MkdirTemp("", "poplegacy")
	if err != nil {
		return err
	}
	in.dir = dir
	in.logPath = filepath.Join(dir, "socat.log")
	return os.Chmod(dir, 0o755)
}

// errAddrInUse marks a start that failed because the chosen port was taken
// between choosing it and socat binding it; start then retries.
var errAddrInUse = errors.New("address already in use")

// run starts socat in its own process group and waits for the server's
// greeting.
func (in *Instance) run(socat string, server []string) error {
	port, err := testproc.FreePort()
	if err != nil {
		return err
	}
	in.addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	log, err := os.OpenFile(in.logPath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	defer log.Close()
	// -d -d: connections and the server processes' exits go to the log.
	cmd := exec.Command(socat, "-d", "-d",
		"TCP-LISTEN:"+strconv.Itoa(port)+",bind=127.0.0.1,fork,reuseaddr",
		"EXEC:"+strings.Join(server, " ")+",nofork")
	cmd.Stdout, cmd.Stderr, cmd.Dir = log, log, in.dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	testproc.SetParentDeathSignal(cmd.SysProcAttr)
	if err := cmd.Start(); err != nil {
		return err
	}
	in.cmd, in.done = cmd, make(chan struct{})
	go reap(cmd, in.done)
	deadline := time.Now().Add(readyTimeout)
	for {
		err := testproc.Greets(in.addr)
		if err == nil {
			return nil
		}
		select {
		case <-in.done:
			b, _ := os.ReadFile(in.logPath)
			if bytes.Contains(b, []byte("Address already in use")) {
				return errAddrInUse
			}
			return fmt.Errorf("socat exited: %s", testproc.LastLines(string(b), 5))
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no greeting on %s within %v: %w", in.addr, readyTimeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// reap waits for socat and closes done.
func reap(cmd *exec.Cmd, done chan<- struct{}) {
	_ = cmd.Wait() // its exit status after our SIGKILL says nothing
	close(done)
}

// close kills socat and every server process it started (one process
// group), waits until they are gone, removes the mailbox and the private
// folder, and then frees the user. A server killed mid-session commits no
// DELE: deletions happen only in the UPDATE state, after QUIT.
func (in *Instance) close() error {
	var errs []error
	if in.cmd != nil {
		pgid := in.cmd.Process.Pid
		_ = syscall.Kill(-pgid, syscall.SIGKILL) // ESRCH: already gone
		<-in.done
		deadline := time.Now().Add(stopTimeout)
		for testproc.GroupAlive(pgid) {
			if time.Now().After(deadline) {
				errs = append(errs, fmt.Errorf("processes of group %d still running %v after SIGKILL", pgid, stopTimeout))
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	if in.mailbox != "" {
		if err := os.Remove(in.mailbox); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if in.dir != "" {
		errs = append(errs, os.RemoveAll(in.dir))
	}
	if in.lock != nil {
		errs = append(errs, in.lock.Close()) // frees the user
	}
	return errors.Join(errs...)
}

// Addr returns the server's address, "127.0.0.1:port".
func (in *Instance) Addr() string { return in.addr }

// User returns the name of the instance's user.
func (in *Instance) User() string { return in.user }

// Password returns the user's password.
func (in *Instance) Password() string { return in.password }

// AddMessage appends msg to the user's mailbox, in mbox format: a "From "
// line, msg with CRLF line endings stored as LF (the servers send every line
// with CRLF again), a newline if msg lacks a final one, and an empty line. A
// line starting with "From " would begin another message, so a msg with one
// is refused rather than quoted. Call it only while no session is open.
func (in *Instance) AddMessage(msg []byte) error {
	body := bytes.ReplaceAll(msg, []byte("\r\n"), []byte("\n"))
	if bytes.HasPrefix(body, []byte("From ")) || bytes.Contains(body, []byte("\nFrom ")) {
		return errors.New("testlegacy: a line of the message starts with \"From \"")
	}
	var b bytes.Buffer
	b.WriteString("From popproxy-test@example.invalid Thu Nov 26 13:11:41 2026\n")
	b.Write(body)
	if len(body) > 0 && body[len(body)-1] != '\n' {
		b.WriteByte('\n')
	}
	b.WriteByte('\n')
	return in.writeMailbox(b.Bytes(), os.O_APPEND)
}

// writeMailbox writes p to the mailbox, opened with flag (O_TRUNC or
// O_APPEND), created if need be, owned by the user with mode 0600.
func (in *Instance) writeMailbox(p []byte, flag int) error {
	f, err := os.OpenFile(in.mailbox, os.O_WRONLY|os.O_CREATE|flag, 0o600)
	if err != nil {
		return fmt.Errorf("testlegacy: %w", err)
	}
	_, err = f.Write(p)
	err = errors.Join(err, f.Chown(in.uid, in.gid), f.Close())
	if err != nil {
		return fmt.Errorf("testlegacy: %w", err)
	}
	return nil
}

// SetMailboxReadable makes the mailbox readable by its owner again (mode
// 0600), or unreadable (mode 0000), a server-side fault: the servers then
// refuse the right password, popa3d with a bare "-ERR". popa3d does not open
// an empty mailbox, so it shows the fault only once a message was added.
func (in *Instance) SetMailboxReadable(readable bool) error {
	mode := os.FileMode(0)
	if readable {
		mode = 0o600
	}
	if err := os.Chmod(in.mailbox, mode); err != nil {
		return fmt.Errorf("testlegacy: %w", err)
	}
	return nil
}

// APOPSecret returns the user's APOP secret, which solid-pop3d reads from
// ~/.spop3d, after setting a random one there if the file has none. The file
// holds it as pop_auth(1) writes it: "APOPSecret", then each octet of the
// secret complemented, in hex (seen with Debian 12's pop_auth). The secret
// outlives the instance, as the password does; only APOP uses it.
func (in *Instance) APOPSecret() (string, error) {
	path := filepath.Join(in.home, ".spop3d")
	b, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("testlegacy: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == "APOPSecret" {
			if secret, err := hex.DecodeString(f[1]); err == nil {
				return string(complement(secret)), nil
			}
		}
	}
	var random [12]byte
	rand.Read(random[:])
	secret := hex.EncodeToString(random[:])
	line := "APOPSecret " + hex.EncodeToString(complement([]byte(secret))) + "\n"
	// solid-pop3d ignores the file unless it is the user's, mode 0600.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return "", fmt.Errorf("testlegacy: %w", err)
	}
	_, err = f.WriteString(line)
	if err = errors.Join(err, f.Chown(in.uid, in.gid), f.Close()); err != nil {
		return "", fmt.Errorf("testlegacy: %w", err)
	}
	return secret, nil
}

// complement inverts every bit of b, in place, and returns it.
func complement(b []byte) []byte {
	for i := range b {
		b[i] = ^b[i]
	}
	return b
}
