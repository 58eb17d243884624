package main

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/popproxy/popproxy/internal/pop3test"
	"github.com/popproxy/popproxy/internal/testproc"
)

// TestRunAndGracefulShutdown runs the binary, logs in through it, and checks
// that SIGTERM waits for the open session up to the grace period, writing its
// audit record to the configured file.
func TestRunAndGracefulShutdown(t *testing.T) {
	bin := buildBinary(t)
	drop := startDrop(t, map[string]string{"u": "p"})
	addr := freeAddr(t)
	auditPath := filepath.Join(t.TempDir(), "audit.jsonl")
	cfg := testproc.WriteConfig(t, "listeners: [{name: pop3, address: "+addr+"}]\nupstream: {address: "+drop+
		"}\ntimeouts: {shutdown_grace: 1s}\naudit: {output: "+auditPath+"}\n")
	cmd := startBinary(t, bin, cfg, addr)
	c := pop3test.Dial(t, addr)
	c.Login("u", "p")

	start := time.Now()
	cmd.Process.Signal(syscall.SIGTERM)
	c.Expect("-ERR [SYS/TEMP] server shutting down")
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit: %v", err)
	}
	if waited := time.Since(start); waited < 900*time.Millisecond {
		t.Errorf("shut down after %v, before the 1s grace period", waited)
	}
	info, err := os.Stat(auditPath)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o600 {
		t.Errorf("audit file mode %v, want 0600", info.Mode().Perm())
	}
	data, _ := os.ReadFile(auditPath)
	if !strings.Contains(string(data), `"event":"session.close"`) || !strings.Contains(string(data), `"reason":"shutdown"`) {
		t.Errorf("audit file lacks the session's close record:\n%s", data)
	}
}

// TestDemo runs `popproxy demo` as the README says and fetches a message
// through it.
func TestDemo(t *testing.T) {
	bin := buildBinary(t)
	cmd := exec.Command(bin, "demo", "-listen", "127.0.0.1:0", "-listen-tls", "127.0.0.1:0")
	stderr, _ := cmd.StderrPipe()
	var stdout strings.Builder
	cmd.Stdout = &stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	var addr string
	sc := bufio.NewScanner(stderr)
	for addr == "" && sc.Scan() {
		if _, rest, ok := strings.Cut(sc.Text(), "popproxy in front of it at "); ok {
			addr = strings.TrimSuffix(rest, ".")
		}
	}
	go func() {
		for sc.Scan() {
		}
	}()
	if addr == "" {
		t.Fatal("demo did not print its address")
	}
	c := pop3test.Dial(t, addr)
	c.Login("demo", "demo")
	c.Cmd("RETR 1", "+OK*")
	if body := c.Body(); !strings.Contains(body, "Subject: Welcome to the popproxy demo") {
		t.Fatalf("demo message:\n%s", body)
	}
	c.Cmd("QUIT", "+OK*")
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
	if !strings.Contains(stdout.String(), `"event":"command","session":`) || !strings.Contains(stdout.String(), `"verb":"RETR"`) {
		t.Errorf("demo audit output:\n%s", stdout.String())
	}
}
