package tlsconf

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCheck checks that Check loads what New would and finds what would stop
// New, without writing anything.
func TestCheck(t *testing.T) {
	dir := t.TempDir()
	good := writePair(t, dir, "good", "mail.example.com")
	other := writePair(t, dir, "other", "mail.example.org")
	notPEM := filepath.Join(dir, "notes.txt")
	os.WriteFile(notPEM, []byte("not a certificate\n"), 0o644)
	aFile := filepath.Join(dir, "a-file")
	os.WriteFile(aFile, nil, 0o644)

	tests := []struct {
		name string
		cfg  Config
		want []string // nil: no error
	}{
		{"static pair", Config{Certificates: []CertFile{good.CertFile}}, nil},
		{"missing certificate", Config{Certificates: []CertFile{{CertFile: filepath.Join(dir, "gone.crt"), KeyFile: good.KeyFile}}},
			[]string{"read certificate", "gone.crt", "no such file"}},
		{"key of another certificate", Config{Certificates: []CertFile{good.CertFile, {CertFile: good.CertFile.CertFile, KeyFile: other.KeyFile}}},
			[]string{"key " + other.KeyFile, "for certificate " + good.CertFile.CertFile, "private key does not match public key"}},
		{"not PEM", Config{Certificates: []CertFile{{CertFile: notPEM, KeyFile: good.KeyFile}}}, []string{notPEM, "no PEM CERTIFICATE block"}},
		{"bad min_version", Config{SelfSigned: []string{"localhost"}, MinVersion: "1.1"}, []string{`MinVersion "1.1"`}},
		{"ACME storage to be created", Config{ACME: &ACME{Storage: filepath.Join(dir, "acme", "certmagic")}}, nil},
		{"ACME storage under a file", Config{ACME: &ACME{Storage: filepath.Join(aFile, "acme")}}, []string{"ACME storage", aFile, "not a directory"}},
		{"ACME storage is a file", Config{ACME: &ACME{Storage: aFile}}, []string{"ACME storage", aFile + " is not a folder"}},
		{"ACME trusted roots", Config{ACME: &ACME{Storage: dir, TrustedRootsFile: good.CertFile.CertFile}}, nil},
		{"ACME trusted roots not PEM", Config{ACME: &ACME{Storage: dir, TrustedRootsFile: notPEM}}, []string{"ACME trusted roots " + notPEM}},
	}
	for _, tt := range tests {
		err := Check(tt.cfg, testLogger(t))
		if tt.want == nil {
			if err != nil {
				t.Errorf("%s: %v", tt.name, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("%s: no error", tt.name)
			continue
		}
		for _, w := range tt.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %v; want it to mention %q", tt.name, err, w)
			}
		}
	}
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if strings.Join(names, " ") != "a-file good.crt good.key notes.txt other.crt other.key" {
		t.Errorf("Check left files behind or created folders: %v", names)
	}
}
