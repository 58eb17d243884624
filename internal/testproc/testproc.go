// Package testproc holds what the test fixtures that run real POP3 servers
// as child processes (testdovecot, testlegacy) share: a free loopback port,
// the check for a POP3 greeting, the signal a server gets when the test
// binary dies, and the live processes of a server's process group; and what
// the tests that run popproxy itself share: a buffer for its output read
// while it runs (SyncBuffer) and a configuration file (WriteConfig).
//
// Typical usage in a fixture:
//
//	port, err := testproc.FreePort()
//	cmd := exec.Command(server, args...)
//	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
//	testproc.SetParentDeathSignal(cmd.SysProcAttr)
//	cmd.Start()
//	for testproc.Greets(addr) != nil { time.Sleep(...) }
//	...
//	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
//	for testproc.GroupAlive(cmd.Process.Pid) { time.Sleep(...) }
package testproc

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// FreePort returns a loopback TCP port that was free a moment ago. A server
// may still find it taken when it binds; fixtures retry with another.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("choose a port: %w", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		return 0, fmt.Errorf("choose a port: %w", err)
	}
	return port, nil
}

// Greets connects to addr and checks for a +OK greeting, then sends QUIT,
// so that the server logs no aborted session.
func Greets(addr string) error {
	_, err := GreetedAt(addr)
	return err
}

// GreetedAt is Greets, also returning when the greeting came (before the
// QUIT), for tests that time how soon a server serves again.
func GreetedAt(addr string) (time.Time, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return time.Time{}, err
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(2 * time.Second)); err != nil {
		return time.Time{}, err
	}
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil {
		return time.Time{}, err
	}
	greeted := time.Now()
	if !strings.HasPrefix(line, "+OK") {
		return time.Time{}, fmt.Errorf("unexpected greeting %q", line)
	}
	// Leave politely, so the server's log shows no aborted session.
	_, _ = io.WriteString(c, "QUIT\r\n")
	_, _ = r.ReadString('\n')
	return greeted, nil
}

// SetParentDeathSignal asks Linux (and FreeBSD) to send SIGTERM to the
// process if the test binary dies without stopping it, e.g. on a go test
// timeout or ^C (a server in its own process group does not see the
// terminal's SIGINT). The field exists only on those systems, hence
// reflection. The signal is tied to the OS thread that started the
// process; the Go runtime does not end threads unless a goroutine exits
// while locked to one, which the fixtures do not do.
func SetParentDeathSignal(attr *syscall.SysProcAttr) {
	f := reflect.ValueOf(attr).Elem().FieldByName("Pdeathsig")
	if f.IsValid() && f.CanSet() && f.Type() == reflect.TypeOf(syscall.SIGTERM) {
		f.Set(reflect.ValueOf(syscall.SIGTERM))
	}
}

// GroupAlive reports whether a process other than a zombie is in process
// group pgid. Children of a dead parent are re-parented to init, and a
// container's init may never reap them (seen here), so zombies are not
// counted where /proc shows them; elsewhere kill(-pgid, 0) decides.
func GroupAlive(pgid int) bool {
	if err := syscall.Kill(-pgid, 0); errors.Is(err, syscall.ESRCH) {
		return false
	}
	procs, ok := Group(pgid)
	return !ok || len(procs) > 0
}

// Proc is a live process.
type Proc struct {
	Pid  int
	Comm string // the executable's name, as /proc/<pid>/stat gives it
}

// Group returns the processes of group pgid that are not zombies, and false
// if /proc cannot tell.
func Group(pgid int) ([]Proc, bool) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, false
	}
	var procs []Proc
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue // gone meanwhile
		}
		// pid (comm) state ppid pgrp ...; comm may contain spaces and ')'.
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 3 || f[0] == "Z" || f[0] == "X" {
			continue
		}
		if g, err := strconv.Atoi(f[2]); err == nil && g == pgid {
			comm := s[:i]
			if j := strings.IndexByte(comm, '('); j >= 0 {
				comm = comm[j+1:]
			}
			procs = append(procs, Proc{Pid: pid, Comm: comm})
		}
	}
	return procs, true
}

// LastLines returns the last n lines of s, for quoting the end of a
// server's log in a test failure.
func LastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
