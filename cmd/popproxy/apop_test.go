package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/popproxy/popproxy/internal/testlegacy"
	"github.com/popproxy/popproxy/internal/testproc"
)

// TestAPOPFetchmail runs fetchmail with protocol APOP through the popproxy
// binary, whose listener passes APOP through to solid-pop3d: the start warns
// about MD5, the messages arrive, and the audit shows an APOP login.
func TestAPOPFetchmail(t *testing.T) {
	fetchmail, err := exec.LookPath("fetchmail")
	if err != nil {
		t.Fatal("fetchmail not found: run .ci/install-test-tools")
	}
	solid := testlegacy.StartSolid(t)
	secret, err := solid.APOPSecret()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"Subject: one\r\n\r\nfirst\r\n", "Subject: two\r\n\r\nsecond\r\n"} {
		if err := solid.AddMessage([]byte(m)); err != nil {
			t.Fatal(err)
		}
	}
	bin := buildBinary(t)
	dir := t.TempDir()
	addr, auditPath := freeAddr(t), filepath.Join(dir, "audit.jsonl")
	cfg := testproc.WriteConfig(t, fmt.Sprintf("listeners: [{name: pop3, address: %s, apop: passthrough}]\n"+
		"upstream: {address: %s}\naudit: {output: %s}\n", addr, solid.Addr(), auditPath))
	proxy := startBinary(t, bin, cfg, addr)
	waitLog(t, proxy, "APOP is MD5-based")

	host, port, _ := net.SplitHostPort(addr)
	rc := filepath.Join(dir, "fetchmailrc")
	os.WriteFile(rc, []byte(fmt.Sprintf("set no syslog\npoll %s service %s protocol APOP user %q password %q is \"root\" here "+
		"mda \"/bin/cat >>%s\"\n", host, port, solid.User(), secret, filepath.Join(dir, "mail"))), 0o600)
	fm := exec.Command(fetchmail, "-f", rc, "--pidfile", filepath.Join(dir, "pid"), "--nosyslog")
	fm.Env = append(os.Environ(), "HOME="+dir)
	if out, err := fm.CombinedOutput(); err != nil {
		t.Fatalf("fetchmail: %v\n%s", err, out)
	}
	mail, _ := os.ReadFile(filepath.Join(dir, "mail"))
	for _, want := range []string{"first", "second"} {
		if !strings.Contains(string(mail), want) {
			t.Errorf("fetched mail lacks %q:\n%s", want, mail)
		}
	}
	var logins int
	for _, r := range readAudit(t, auditPath) {
		if r["event"] == "auth" {
			logins++
			if r["mechanism"] != "APOP" || r["ok"] != true || r["user"] != solid.User() {
				t.Errorf("auth record %v, want a successful APOP login", r)
			}
		}
	}
	if logins != 1 {
		t.Errorf("%d auth records, want 1", logins)
	}
}
