package main

import (
	"bufio"
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestDemoHints runs `popproxy demo` and every command it suggests (curl
// and Python's poplib), which must work as printed.
func TestDemoHints(t *testing.T) {
	bin := buildBinary(t)
	cmd := exec.Command(bin, "demo", "-listen", "127.0.0.1:0", "-listen-tls", "127.0.0.1:0")
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	var hints []string
	sc := bufio.NewScanner(stderr)
	for sc.Scan() && !strings.HasPrefix(sc.Text(), "Press Ctrl-C") {
		if line := strings.TrimSpace(sc.Text()); strings.HasPrefix(line, "curl ") || strings.HasPrefix(line, "python3 ") {
			hints = append(hints, line)
		}
	}
	go func() {
		for sc.Scan() {
		}
	}()
	if len(hints) < 5 || !strings.HasPrefix(hints[len(hints)-1], "python3 -c 'import poplib;") {
		t.Fatalf("demo hints: %q", hints)
	}
	for _, hint := range hints {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		out, err := exec.CommandContext(ctx, "sh", "-c", hint).CombinedOutput()
		cancel()
		if err != nil || len(out) == 0 {
			t.Errorf("%s: %v\n%s", hint, err, out)
		}
	}
}

// TestBuildOutputsIgnored checks that no binary is committed and that git
// ignores the binaries `go build` leaves where it is run.
func TestBuildOutputsIgnored(t *testing.T) {
	git, err := exec.LookPath("git")
	if err != nil {
		t.Fatal("git not found: install it with `apt-get install -y git`")
	}
	out, err := exec.Command(git, "-C", "../..", "ls-files", "--eol").Output()
	if err != nil {
		t.Fatalf("git ls-files (the tests run in a git checkout): %v", err)
	}
	for line := range strings.Lines(string(out)) {
		if strings.HasPrefix(line, "i/-text") { // git's guess: binary
			t.Errorf("binary file committed: %s", line)
		}
	}
	built := []string{"popproxy", "popbench", "cmd/popproxy/popproxy", "bench/popbench/popbench"}
	out, err = exec.Command(git, append([]string{"-C", "../..", "check-ignore", "--no-index"}, built...)...).Output()
	if got := strings.Fields(string(out)); err != nil || len(got) != len(built) {
		t.Errorf("git check-ignore %q: %v, ignored %q", built, err, got)
	}
}
