package main

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/popproxy/popproxy/internal/testproc"
)

// TestCheckExamples runs -check on every configuration in examples/, with
// the sample certificates and the map file they name, on a host prepared as
// examples/systemd/popproxy.service says (/var/log/popproxy and
// /var/lib/popproxy exist, here under a temporary folder). -check must leave
// both folders as it found them.
func TestCheckExamples(t *testing.T) {
	bin := buildBinary(t)
	examples, _ := filepath.Glob("../../examples/*.yaml")
	if len(examples) < 5 {
		t.Fatalf("examples: %v", examples)
	}
	dir := t.TempDir()
	copyTree(t, "../../examples", dir)
	logDir, libDir := filepath.Join(dir, "var-log-popproxy"), filepath.Join(dir, "var-lib-popproxy")
	for _, d := range []string{logDir, libDir} {
		if err := os.Mkdir(d, 0o750); err != nil {
			t.Fatal(err)
		}
	}
	for _, example := range examples {
		path := filepath.Join(dir, filepath.Base(example))
		data, _ := os.ReadFile(path)
		text := strings.NewReplacer("/var/log/popproxy", logDir, "/var/lib/popproxy", libDir).Replace(string(data))
		os.WriteFile(path, []byte(text), 0o644)
		status, stdout, stderr := runBinary(t, bin, "-config", path, "-check")
		if status != 0 || stdout != "configuration OK\n" {
			t.Errorf("%s: exit status %d\n%s%s", example, status, stdout, stderr)
		}
	}
	for _, d := range []string{logDir, libDir} {
		if entries, _ := os.ReadDir(d); len(entries) > 0 {
			t.Errorf("-check left %v in %s", entries, d)
		}
	}
}

// copyTree copies the files under src to dst.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), data, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestCheckFindsWhatStartWouldFail gives -check configurations that parse but
// would not start, and checks that it names what is wrong, every problem in
// one run.
func TestCheckFindsWhatStartWouldFail(t *testing.T) {
	bin := buildBinary(t)
	certs, err := filepath.Abs("../../examples/sample-certs")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	aFile := filepath.Join(dir, "a-file")
	os.WriteFile(aFile, []byte("not PEM\n"), 0o644)
	mapFile := filepath.Join(dir, "routes.map")
	os.WriteFile(mapFile, []byte("alice nowhere\n"), 0o644)
	com, org := filepath.Join(certs, "mail.example.com"), filepath.Join(certs, "mail.example.org")

	plain := "listeners: [{name: pop3, address: 127.0.0.1:1110}]\n"
	implicit := "listeners: [{name: pop3s, address: 127.0.0.1:1995, tls: implicit}]\n"
	upstreamTLS := "upstream: {address: pop.example.net:995, tls: implicit, "
	tests := []struct {
		name, yaml string
		want       []string
	}{
		{"missing upstream CA file", plain + upstreamTLS + "ca_file: " + dir + "/backend-ca.pem}\n",
			[]string{"read upstream CA file", dir + "/backend-ca.pem: no such file or directory"}},
		{"upstream CA file not PEM", plain + upstreamTLS + "ca_file: " + aFile + "}\n",
			[]string{"upstream CA file " + aFile, "no PEM CERTIFICATE block"}},
		{"upstream client certificate with another's key", plain + upstreamTLS + "client_cert: {cert_file: " + com + ".crt, key_file: " + org + ".key}}\n",
			[]string{org + ".key (for certificate " + com + ".crt)", "private key does not match public key"}},
		{"audit folder missing", plain + "upstream: {address: a:110}\naudit: {output: " + dir + "/missing/audit.jsonl}\n",
			[]string{"audit.output: audit: open " + dir + "/missing/audit.jsonl: no such file or directory"}},
		{"audit output a folder", plain + "upstream: {address: a:110}\naudit: {output: " + dir + "}\n",
			[]string{"audit.output", "is a directory"}},
		{"missing certificate", implicit + "tls: {certificates: [{cert_file: " + dir + "/gone.crt, key_file: " + com + ".key}]}\nupstream: {address: a:995, tls: implicit}\n",
			[]string{"tls: tlsconf: read certificate", dir + "/gone.crt: no such file"}},
		{"certificate with another's key", implicit + "tls: {certificates: [{cert_file: " + com + ".crt, key_file: " + org + ".key}]}\nupstream: {address: a:995, tls: implicit}\n",
			[]string{"private key does not match public key"}},
		{"missing map file", plain + "upstreams: [{name: u, address: a:110}]\nroutes: {default: u, map_file: " + dir + "/gone.map}\n",
			[]string{"routes.map_file", dir + "/gone.map: no such file"}},
		{"map file naming an unknown upstream", plain + "upstreams: [{name: u, address: a:110}]\nroutes: {default: u, map_file: " + mapFile + "}\n",
			[]string{"routes.map_file", "nowhere"}},
		{"ACME storage under a file", implicit + "tls: {acme: {domains: [mail.example.com], email: a@example.com, http_port: 80, storage: " + aFile + "/acme}}\nupstream: {address: a:995, tls: implicit}\n",
			[]string{"tls: tlsconf: ACME storage", aFile, "not a directory"}},
		{"ACME trusted roots not PEM", implicit + "tls: {acme: {domains: [mail.example.com], email: a@example.com, http_port: 80, storage: " + dir + ", trusted_roots_file: " + aFile + "}}\nupstream: {address: a:995, tls: implicit}\n",
			[]string{"ACME trusted roots " + aFile}},
		{"listener port out of range", "listeners: [{name: pop3, address: 127.0.0.1:99999}]\nupstream: {address: a:110}\n",
			[]string{"listeners[0].address: address 99999: invalid port"}},
		{"admin port no service", plain + "upstream: {address: a:110}\nadmin: {address: 127.0.0.1:no-such-service}\n",
			[]string{"admin.address", "no-such-service"}},
		{"every problem at once", plain + upstreamTLS + "ca_file: " + dir + "/backend-ca.pem}\naudit: {output: " + dir + "/missing/audit.jsonl}\n",
			[]string{"2 problems:", "backend-ca.pem: no such file", "missing/audit.jsonl: no such file"}},
		{"apop passthrough without a default route", plain[:len(plain)-3] + ", apop: passthrough}]\nupstreams: [{name: u, address: a:110}]\nroutes: {users: {alice: u}}\n",
			[]string{"listeners[0].apop (line 1): passthrough needs a default route"}},
		{"configuration errors first", "listeners: [{name: a, address: x}]\ntimeouts: {idle: 1m}\n",
			[]string{`listeners[0].address (line 1): "x" is not host:port`, "upstream.address: is required", "timeouts.idle (line 2): 1m0s is below"}},
	}
	for _, tt := range tests {
		status, stdout, stderr := runBinary(t, bin, "-config", testproc.WriteConfig(t, tt.yaml), "-check")
		if status != 1 || stdout != "" {
			t.Errorf("%s: exit status %d\n%s%s", tt.name, status, stdout, stderr)
			continue
		}
		for _, want := range tt.want {
			if !strings.Contains(stderr, want) {
				t.Errorf("%s: -check lacks %q:\n%s", tt.name, want, stderr)
			}
		}
	}
}

// TestCheckLeavesAuditFileAlone checks that -check opens the audit file as
// the start would but leaves no file where there was none, and does not
// touch one that exists.
func TestCheckLeavesAuditFileAlone(t *testing.T) {
	bin := buildBinary(t)
	auditPath := filepath.Join(t.TempDir(), "audit.jsonl")
	cfg := testproc.WriteConfig(t, "listeners: [{name: pop3, address: 127.0.0.1:1110}]\nupstream: {address: a:110}\naudit: {output: "+auditPath+"}\n")
	if status, stdout, stderr := runBinary(t, bin, "-config", cfg, "-check"); status != 0 || stdout != "configuration OK\n" {
		t.Fatalf("exit status %d\n%s%s", status, stdout, stderr)
	}
	if _, err := os.Stat(auditPath); !os.IsNotExist(err) {
		t.Errorf("-check left an audit file behind: %v", err)
	}
	os.WriteFile(auditPath, []byte("{\"event\":\"session.open\"}\n"), 0o600)
	if status, _, stderr := runBinary(t, bin, "-config", cfg, "-check"); status != 0 {
		t.Fatalf("exit status %d\n%s", status, stderr)
	}
	if data, _ := os.ReadFile(auditPath); string(data) != "{\"event\":\"session.open\"}\n" {
		t.Errorf("-check changed the audit file: %q", data)
	}
}
