package testproc

import (
	"net"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"
)

func TestGroup(t *testing.T) {
	cmd := exec.Command("sleep", "60")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pgid := cmd.Process.Pid
	procs, ok := Group(pgid)
	if !ok || len(procs) != 1 || procs[0].Pid != pgid || procs[0].Comm != "sleep" {
		t.Errorf("Group = %v, %v; want the sleep process %d", procs, ok, pgid)
	}
	if !GroupAlive(pgid) {
		t.Error("GroupAlive = false while sleep runs")
	}
	if err := syscall.Kill(-pgid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// Not reaped yet: a zombie does not count.
	deadline := time.Now().Add(5 * time.Second)
	for GroupAlive(pgid) {
		if time.Now().After(deadline) {
			t.Fatal("group still alive 5s after SIGKILL")
		}
		time.Sleep(5 * time.Millisecond)
	}
	_ = cmd.Wait()
}

func TestGreets(t *testing.T) {
	port, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	if Greets(addr) == nil {
		t.Error("Greets succeeded with nobody listening")
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go greetOnce(l, "+OK hello\r\n")
	if err := Greets(addr); err != nil {
		t.Errorf("Greets: %v", err)
	}
	go greetOnce(l, "-ERR busy\r\n")
	if Greets(addr) == nil {
		t.Error("Greets accepted -ERR")
	}
}

// greetOnce answers one connection with greeting.
func greetOnce(l net.Listener, greeting string) {
	c, err := l.Accept()
	if err != nil {
		return
	}
	defer c.Close()
	c.Write([]byte(greeting))
	buf := make([]byte, 64)
	c.Read(buf) // QUIT
}

func TestLastLines(t *testing.T) {
	for _, tc := range []struct {
		in   string
		n    int
		want string
	}{
		{"a\nb\nc\n", 2, "b\nc"},
		{"a\nb", 5, "a\nb"},
		{"", 3, ""},
	} {
		if got := LastLines(tc.in, tc.n); got != tc.want {
			t.Errorf("LastLines(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
		}
	}
}
