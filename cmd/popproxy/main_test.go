package main

import (
	"bufio"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestRunAndGracefulShutdown runs the binary, logs in through it, and checks
// that SIGTERM waits for the open session up to the grace period, writing its
// audit record to the configured file.
func TestRunAndGracefulShutdown(t *testing.T) {
	bin := buildBinary(t)
	drop := startDrop(t, map[string]string{"u": "p"})
	addr := freeAddr(t)
	auditPath := filepath.Join(t.TempDir(), "audit.jsonl")
	cfg := writeConfig(t, "listeners: [{name: pop3, address: "+addr+"}]\nupstream: {address: "+drop+
		"}\ntimeouts: {shutdown_grace: 1s}\naudit: {output: "+auditPath+"}\n")
	cmd := startBinary(t, bin, cfg, addr)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	r := bufio.NewReader(conn)
	expect := func(prefix string) {
		t.Helper()
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		line, err := r.ReadString('\n')
		if err != nil || !strings.HasPrefix(line, prefix) {
			t.Fatalf("got %q, %v; want %s", line, err, prefix)
		}
	}
	expect("+OK")
	conn.Write([]byte("USER u\r\nPASS p\r\n"))
	expect("+OK")
	expect("+OK")

	start := time.Now()
	cmd.Process.Signal(syscall.SIGTERM)
	expect("-ERR [SYS/TEMP] server shutting down")
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
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	conn.Write([]byte("USER demo\r\nPASS demo\r\nRETR 1\r\nQUIT\r\n"))
	var got strings.Builder
	r := bufio.NewReader(conn)
	for {
		line, err := r.ReadString('\n')
		got.WriteString(line)
		if err != nil {
			break
		}
	}
	if !strings.Contains(got.String(), "Subject: Welcome to the popproxy demo") || !strings.Contains(got.String(), "\r\n.\r\n+OK") {
		t.Fatalf("demo session:\n%s", got.String())
	}
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
	if !strings.Contains(stdout.String(), `"event":"command","session":`) || !strings.Contains(stdout.String(), `"verb":"RETR"`) {
		t.Errorf("demo audit output:\n%s", stdout.String())
	}
}
