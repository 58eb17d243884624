package testlegacy

import (
	"crypto/md5"
	"encoding/hex"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/popproxy/popproxy/internal/pop3test"
	"github.com/popproxy/popproxy/internal/testproc"
)

// dialGreeting connects and returns the client and the greeting, which
// may be a bare "+OK" (popa3d), so pop3test.Dial's "+OK text" does not fit.
func dialGreeting(t *testing.T, addr string) (*pop3test.Client, string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, pop3test.Timeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	cl := pop3test.NewClient(t, c)
	return cl, cl.Line()
}

func dial(t *testing.T, addr string) *pop3test.Client {
	t.Helper()
	c, _ := dialGreeting(t, addr)
	return c
}

// server is what TestServers expects of one server.
type server struct {
	name           string
	start          func(testing.TB) *Instance
	greeting       string
	retr           string // the status line to RETR 1
	wrongPassword  string
	unreadable     string // the answer to the right password with the mailbox unreadable
	trailingCRLF   string // what the server adds at the end of each message
	sizeDifference int    // how much more than popa3d's its sizes are
}

var servers = []server{
	{
		name: "popa3d", start: StartPopa3d, greeting: "+OK", retr: "+OK",
		wrongPassword: "-ERR Authentication failed (bad password?)", unreadable: "-ERR",
	},
	{
		name: "solid-pop3d", start: StartSolid, greeting: "+OK Solid POP3 server ready <",
		retr: "+OK 31 octets", wrongPassword: "-ERR authentication failed",
		unreadable: "-ERR can't open mailbox file", trailingCRLF: "\r\n", sizeDifference: 2,
	},
}

// Two messages: one with a line that gets dot-stuffed, one without a final
// newline.
const (
	msg1 = "Subject: one\r\n\r\nhello\r\n.dot\r\n"
	msg2 = "Subject: two\r\n\r\nno final newline"
)

// TestServers checks each server against what the package doc says.
func TestServers(t *testing.T) {
	for _, s := range servers {
		t.Run(s.name, func(t *testing.T) {
			t.Parallel()
			srv := s.start(t)
			for _, m := range []string{msg1, msg2} {
				if err := srv.AddMessage([]byte(m)); err != nil {
					t.Fatal(err)
				}
			}
			if err := srv.AddMessage([]byte("Subject: x\r\n\r\nFrom here\r\n")); err == nil {
				t.Error(`AddMessage accepted a line starting with "From "`)
			}

			c := dial(t, srv.Addr())
			c.Cmd("USER "+srv.User(), "*")
			if st := c.Cmd("PASS wrong", "*"); st != s.wrongPassword {
				t.Errorf("wrong password: %q, want %q", st, s.wrongPassword)
			}

			c = dial(t, srv.Addr())
			c.Login(srv.User(), srv.Password())
			if st := c.Cmd("CAPA", "*"); !strings.HasPrefix(st, "-ERR") {
				t.Errorf("CAPA: %q, want -ERR", st)
			}
			// msg1 is 29 octets with CRLF, msg2 34 with the CRLF the
			// servers add.
			size1, size2 := 29+s.sizeDifference, 34+s.sizeDifference
			if st, want := c.Cmd("LIST 1", "*"), "+OK 1 "+strconv.Itoa(size1); st != want {
				t.Errorf("LIST 1: %q, want %q", st, want)
			}
			if st, want := c.Cmd("STAT", "*"), "+OK 2 "+strconv.Itoa(size1+size2); st != want {
				t.Errorf("STAT: %q, want %q", st, want)
			}
			if st := c.Cmd("RETR 1", "*"); st != s.retr {
				t.Errorf("RETR 1: %q, want %q", st, s.retr)
			}
			if body, want := c.Body(), "Subject: one\r\n\r\nhello\r\n..dot\r\n"+s.trailingCRLF; body != want {
				t.Errorf("RETR 1 body %q, want %q", body, want)
			}
			if st := c.Cmd("UIDL 2", "*"); !strings.HasPrefix(st, "+OK 2 ") {
				t.Errorf("UIDL 2: %q", st)
			}
			if st := c.Cmd("TOP 2 0", "*"); !strings.HasPrefix(st, "+OK") {
				t.Errorf("TOP 2 0: %q", st)
			}
			if body := c.Body(); body != "Subject: two\r\n\r\n" {
				t.Errorf("TOP 2 0 body %q", body)
			}
			c.Cmd("DELE 1", "*")
			if st := c.Cmd("QUIT", "*"); !strings.HasPrefix(st, "+OK") {
				t.Errorf("QUIT: %q", st)
			}

			c = dial(t, srv.Addr())
			c.Login(srv.User(), srv.Password())
			if st, want := c.Cmd("STAT", "*"), "+OK 1 "+strconv.Itoa(size2); st != want {
				t.Errorf("STAT after DELE 1 and QUIT: %q, want %q", st, want)
			}
			c.Cmd("QUIT", "*")

			if err := srv.SetMailboxReadable(false); err != nil {
				t.Fatal(err)
			}
			c = dial(t, srv.Addr())
			c.Cmd("USER "+srv.User(), "*")
			if st := c.Cmd("PASS "+srv.Password(), "*"); st != s.unreadable {
				t.Errorf("right password, unreadable mailbox: %q, want %q", st, s.unreadable)
			}
			if err := srv.SetMailboxReadable(true); err != nil {
				t.Fatal(err)
			}
			c = dial(t, srv.Addr())
			c.Login(srv.User(), srv.Password())
		})
	}
}

// TestSolidAPOP: with the secret APOPSecret set, solid-pop3d takes APOP with
// the digest of its greeting's timestamp and that secret, and refuses a
// wrong one.
func TestSolidAPOP(t *testing.T) {
	srv := StartSolid(t)
	secret, err := srv.APOPSecret()
	if err != nil {
		t.Fatal(err)
	}
	if again, err := srv.APOPSecret(); err != nil || again != secret {
		t.Fatalf("APOPSecret again: %q, %v; want %q", again, err, secret)
	}
	for _, tc := range []struct{ secret, want string }{
		{"wrong", "-ERR"},
		{secret, "+OK"},
	} {
		c, greeting := dialGreeting(t, srv.Addr())
		ts := greeting[strings.LastIndexByte(greeting, '<'):]
		digest := md5.Sum([]byte(ts + tc.secret))
		if st := c.Cmd("APOP "+srv.User()+" "+hex.EncodeToString(digest[:]), "*"); !strings.HasPrefix(st, tc.want) {
			t.Errorf("APOP with secret %q: %q, want %s", tc.secret, st, tc.want)
		}
	}
}

// TestCleanup checks that the end of a test leaves no server process, no
// mailbox, and the user free for the next instance.
func TestCleanup(t *testing.T) {
	var pgid int
	var mailbox, user string
	t.Run("instance", func(t *testing.T) {
		srv := StartPopa3d(t)
		pgid, mailbox, user = srv.cmd.Process.Pid, srv.mailbox, srv.User()
		c := dial(t, srv.Addr())
		c.Login(srv.User(), srv.Password()) // a session still open at the end
	})
	if pgid == 0 {
		t.Fatal("no instance started")
	}
	if testproc.GroupAlive(pgid) {
		t.Errorf("process group %d still alive", pgid)
	}
	if _, err := os.Stat(mailbox); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("mailbox %s left behind: %v", mailbox, err)
	}
	f, err := os.Open(filepath.Join(Dir, user+".password"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	switch err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); {
	case errors.Is(err, syscall.EWOULDBLOCK):
		// Another test process may have taken the freed user at once.
		t.Logf("user %s is taken", user)
	case err != nil:
		t.Error(err)
	}
}
