package main

import (
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/popproxy/popproxy/internal/maildrop"
	"github.com/popproxy/popproxy/internal/testproc"
)

// buildBinary compiles popproxy once for the tests that run it as a process,
// with extra go build flags if given.
func buildBinary(t *testing.T, flags ...string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "popproxy")
	out, err := exec.Command("go", append(append([]string{"build", "-o", bin}, flags...), ".")...).CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// startDrop serves the sample mail drop for users on loopback.
func startDrop(t *testing.T, users map[string]string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	drop := maildrop.New(users, maildrop.Sample())
	go drop.Serve(l)
	t.Cleanup(func() { drop.Close() })
	return l.Addr().String()
}

// startBinary runs popproxy with cfg and waits until addr accepts.
func startBinary(t *testing.T, bin, cfg, addr string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(bin, "-config", cfg)
	cmd.Stderr = &testproc.SyncBuffer{}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return cmd
		}
		if time.Now().After(deadline) {
			t.Fatalf("popproxy did not listen: %v\n%s", err, cmd.Stderr)
		}
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// waitLog waits until the process's operational log contains text.
func waitLog(t *testing.T, cmd *exec.Cmd, text string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(cmd.Stderr.(*testproc.SyncBuffer).String(), text); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("log lacks %q:\n%s", text, cmd.Stderr)
		}
	}
}
